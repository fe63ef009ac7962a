"""Shared fixtures: the capture corpus, a real redis-server, sensor configuration files."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.services import CORPUS, free_port, stop_process, wait_for


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The directory of public captures beside the repository; skip when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"capture corpus not found at {CORPUS.resolve()}")
    return CORPUS.resolve()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server started for this test session on a free 127.0.0.1 port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (Debian: apt-get install redis-server)")
    import redis

    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    log = open(directory / "redis.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
         "no", "--dir", str(directory), "--protected-mode", "yes"],
        stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with {process.returncode}; see "
                        f"{directory / 'redis.log'}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, 15, f"redis-server on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop_process(process)
        log.close()


@pytest.fixture
def write_sensor_config(tmp_path: Path) -> Callable[..., Path]:
    """Return a function that writes a sensor configuration file with a temporary data dir.

    Keyword arguments are merged into the document; ``capture={...}`` sets that section.
    """

    def write(**sections: Any) -> Path:
        data_dir = tmp_path / "data"
        document: dict[str, Any] = {"data_dir": str(data_dir), "srcid": "test-sensor"}
        document.update(sections)
        path = tmp_path / "wirewatch.toml"
        path.write_text(tomli_w.dumps(document), encoding="utf-8")
        return path

    return write
