"""Sensor configuration: defaults, environment overrides, validation errors, atomic writes."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest

from appliance.config import (
    ConfigError,
    load_config,
    update_capture_section,
    validate_capture,
    write_config,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WIREWATCH_CONFIG", "WIREWATCH_DATA_DIR", "WIREWATCH_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()

    assert config.path is None
    assert config.data_dir == tmp_path / "var"
    assert config.srcid == socket.gethostname()
    assert config.capture.status_interval == 60
    assert config.capture.user_data_len == 128
    assert config.capture.appbytes is True
    assert config.capture.rotate_seconds == 3600
    assert config.capture.source == ""
    assert config.archive_dir == tmp_path / "var" / "archive"
    assert config.jobs.results_dir == tmp_path / "var" / "results"
    assert config.broker_url == f"sqla+sqlite:///{tmp_path}/var/broker.sqlite"
    assert config.result_backend == f"db+sqlite:///{tmp_path}/var/results.sqlite"
    assert config.queue == f"sensor.{socket.gethostname()}"


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREWATCH_DATA_DIR", str(tmp_path / "elsewhere"))
    config = load_config()
    assert config.data_dir == tmp_path / "elsewhere"
    assert config.archive_dir == tmp_path / "elsewhere" / "archive"


def test_file_selected_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path / "w.toml", 'srcid = "probe-7"\n')
    monkeypatch.setenv("WIREWATCH_CONFIG", str(path))
    config = load_config()
    assert config.path == path
    assert config.srcid == "probe-7"
    assert config.queue == "sensor.probe-7"


def test_relative_paths_follow_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    capture = tmp_path / "etc" / "replay.pcap"
    capture.write_bytes(b"")
    path = write_toml(tmp_path / "etc" / "w.toml", """
data_dir = "../data"
[capture]
source = "replay.pcap"
[archive]
dir = "arch"
[geoip]
country_db = "geo/countries.mmdb"
""")
    config = load_config(path)
    assert config.data_dir == tmp_path / "data"
    assert config.capture.source == str(capture)
    assert config.capture.mode == "replay"
    assert config.archive_dir == tmp_path / "etc" / "arch"
    assert config.geoip_country_db == tmp_path / "etc" / "geo" / "countries.mmdb"


def test_broker_environment_overrides_file(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path / "w.toml", '[broker]\nurl = "redis://127.0.0.1:1/0"\n')
    assert load_config(path).broker_url == "redis://127.0.0.1:1/0"
    assert load_config(path).result_backend == "redis://127.0.0.1:1/0"

    monkeypatch.setenv("WIREWATCH_BROKER_URL", "redis://127.0.0.1:2/3")
    config = load_config(path)
    assert config.broker_url == "redis://127.0.0.1:2/3"
    assert config.result_backend == "redis://127.0.0.1:2/3"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[capture]\nuser_data_len = 70000\n", "capture.user_data_len"),
        ("[capture]\nuser_data_len = -1\n", "capture.user_data_len"),
        ("[capture]\nuser_data_len = \"128\"\n", "capture.user_data_len"),
        ("[capture]\nstatus_interval = 0\n", "capture.status_interval"),
        ("[capture]\nappbytes = 1\n", "capture.appbytes"),
        ("[capture]\nrotate_seconds = 0\n", "capture.rotate_seconds"),
        ("[capture]\nsource = \"/no/such/file.pcap\"\n", "capture.source"),
        ("[capture]\nsource = \"eth0 with spaces\"\n", "capture.source"),
        ("[capture]\nsnapshot_length = 96\n", "capture.snapshot_length"),
        ("colour = \"blue\"\n", "colour"),
        ("srcid = \"has space\"\n", "srcid"),
        ("[broker]\nurl = \"localhost:6379\"\n", "broker.url"),
        ("[broker]\nurl = \"amqp://127.0.0.1//\"\n", "broker.result_backend"),
        ("[jobs]\nresult_ttl = 5\n", "jobs.result_ttl"),
        ("[jobs]\nsoft_time_limit = 100\ntime_limit = 50\n", "jobs.time_limit"),
        ("capture = 3\n", "capture"),
    ],
)
def test_invalid_values_name_key(tmp_path: Path, text: str, key: str) -> None:
    path = write_toml(tmp_path / "w.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key
    assert key in str(caught.value)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert caught.value.key == "config"
    assert "not found" in caught.value.message


def test_toml_syntax_error_is_config_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "w.toml", "[capture\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "invalid TOML" in caught.value.message


def test_validate_capture_merges_defaults() -> None:
    capture = validate_capture({"user_data_len": 0, "appbytes": False, "source": "eth0"})
    assert capture.user_data_len == 0
    assert capture.appbytes is False
    assert capture.status_interval == 60
    assert capture.mode == "live"


def test_validate_capture_error_value() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_capture({"user_data_len": 65536})
    assert caught.value.key == "capture.user_data_len"
    assert caught.value.value == 65536
    assert "65535" in caught.value.message


def test_write_config_is_atomic_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    write_config({"srcid": "a", "capture": {"user_data_len": 64}}, path)
    assert load_config(path).capture.user_data_len == 64
    assert [p.name for p in tmp_path.iterdir()] == ["w.toml"]


def test_update_capture_keeps_other_keys(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "w.toml", 'srcid = "keep-me"\n[jobs]\nresult_ttl = 120\n')
    capture = validate_capture({"user_data_len": 256})
    update_capture_section(path, capture)

    with open(path, "rb") as handle:
        document = tomllib.load(handle)
    assert document["srcid"] == "keep-me"
    assert document["jobs"] == {"result_ttl": 120}
    assert document["capture"]["user_data_len"] == 256
    assert load_config(path).capture == capture
