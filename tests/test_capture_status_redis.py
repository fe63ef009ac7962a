"""Capture status through Redis: the daemon publishes it, the API prefers it to the file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from api import create_app
from appliance.atomic import write_json_atomically
from appliance.config import Config, load_config
from appliance.tokens import create_token
from tests.services import stop_process, wait_for
from tests.test_capture_daemon import expected_records, start_daemon
from worker.capture_status import PUBLISH_PERIOD, REDIS_KEY, StatusPublisher, read_status

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def sensor(request: pytest.FixtureRequest, write_sensor_config: Callable[..., Path],
           redis_url: str, redis_client: redis.Redis) -> Iterator[Path]:
    """A sensor configuration with the Redis broker and a srcid used by this test alone."""
    srcid = f"status-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    path = write_sensor_config(srcid=srcid, broker={"url": redis_url})
    yield path
    redis_client.hdel(REDIS_KEY, srcid)


def shared_status(client: redis.Redis, config: Config) -> dict[str, Any] | None:
    raw = client.hget(REDIS_KEY, config.srcid)
    return None if raw is None else json.loads(raw)


def test_publisher_sends_at_most_once_a_second(sensor: Path,
                                               redis_client: redis.Redis) -> None:
    config = load_config(sensor)
    publisher = StatusPublisher(config)
    try:
        assert publisher.publish({"state": "running", "packets": 1})
        assert not publisher.publish({"state": "running", "packets": 2})
        assert shared_status(redis_client, config) == {"state": "running", "packets": 1}
        assert not publisher.publish_pending(), "the held document is not due yet"

        time.sleep(PUBLISH_PERIOD)
        assert publisher.publish_pending()
        assert shared_status(redis_client, config) == {"state": "running", "packets": 2}
        assert not publisher.publish_pending(), "nothing is left to send"

        # A state change goes out at once, as does a final document.
        assert publisher.publish({"state": "stopped", "packets": 3})
        assert publisher.publish({"state": "stopped", "packets": 4}, force=True)
        assert shared_status(redis_client, config) == {"state": "stopped", "packets": 4}
    finally:
        publisher.close()


def test_publisher_without_redis_does_nothing(write_sensor_config: Callable[..., Path]) -> None:
    publisher = StatusPublisher(load_config(write_sensor_config()))
    assert publisher.client is None
    assert not publisher.publish({"state": "running"}, force=True)


def test_daemon_publishes_the_status_file_to_redis(corpus_dir: Path, sensor: Path,
                                                   redis_client: redis.Redis,
                                                   tmp_path: Path) -> None:
    capture = corpus_dir / "http-wikipedia.pcap"
    document = sensor.read_text(encoding="utf-8")
    sensor.write_text(document + f'\n[capture]\nsource = "{capture}"\n', encoding="utf-8")
    config = load_config(sensor)
    daemon = start_daemon(sensor, tmp_path / "daemon.log")
    try:
        finished = wait_for(
            lambda: (s := shared_status(redis_client, config)) and s["state"] == "finished"
            and s, 120, "the replay to finish in Redis")
    finally:
        exit_status = stop_process(daemon)
    assert exit_status == 0, (tmp_path / "daemon.log").read_text()

    records, _, _ = expected_records(capture)
    assert finished["records"] == records
    assert finished["srcid"] == config.srcid
    assert finished["packets"] > 0

    # The final document reaches Redis too, identical to the file.
    final = shared_status(redis_client, config)
    assert final is not None and final["state"] == "stopped"
    on_disk = json.loads(config.capture_status_path.read_text(encoding="utf-8"))
    assert final == on_disk


def test_api_reads_redis_then_file(sensor: Path, redis_client: redis.Redis) -> None:
    config = load_config(sensor)
    app = create_app({"TESTING": True, "WIREWATCH_CONFIG_PATH": str(sensor)})
    client = app.test_client()
    _, token = create_token(sensor, ["admin"])
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"

    def capture_view() -> dict[str, Any] | None:
        response = client.get("/api/v1/capture")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["status"]

    def metric(name: str) -> float:
        text = client.get("/api/v1/metrics").get_data(as_text=True)
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise AssertionError(f"{name} missing from /api/v1/metrics")

    assert capture_view() is None
    now = time.time()
    file_status = {"state": "finished", "srcid": config.srcid, "packets": 10, "records": 2,
                   "updated": now - 5}
    write_json_atomically(config.capture_status_path, file_status)
    assert capture_view() == file_status, "without a Redis entry the file is read"

    shared = {"state": "running", "srcid": config.srcid, "packets": 70, "records": 9,
              "updated": now}
    redis_client.hset(REDIS_KEY, config.srcid, json.dumps(shared))
    assert capture_view() == shared
    assert read_status(config) == shared
    assert metric("wirewatch_capture_packets_total") == 70
    assert metric("wirewatch_capture_running") == 1

    newer = dict(file_status, updated=now + 5)
    write_json_atomically(config.capture_status_path, newer)
    assert capture_view() == newer, "a file newer than the Redis document wins"

    redis_client.hset(REDIS_KEY, config.srcid, b"not json")
    assert capture_view() == newer
