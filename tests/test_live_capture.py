"""Live capture through a veth pair: the daemon and ``wirewatch capture -i`` against offline runs.

Each test makes its own network namespaces (tests/netns.py), replays corpus captures from
the sender end and captures on the receiver end; records are compared with the flow
meter's offline run of the same files, per flow with both directions together, because
live timing may split a flow into records at other points than the original timestamps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from appliance.archive import ACTIVE_NAME, read_records
from appliance.capture import CaptureSettings, flows_from_file
from appliance.config import ConfigError, load_config, parse_config
from appliance.records import address_to_text
from tests.netns import VethPair, veth_pair  # noqa: F401 - pytest fixture
from tests.services import REPO, service_env, stop_process, wait_for

pytestmark = pytest.mark.slow

SMALL_CAPTURES = ("dns-udp-basic.pcap", "http-wikipedia.pcap", "icmp-ping.pcap", "dns-vlan.pcap",
                  "dns-tcp-basic.pcap")


def flow_totals(table: pa.Table) -> Counter[tuple[Any, ...]]:
    """Sum pkts, bytes and application bytes per flow, both directions under one key."""
    totals: Counter[tuple[Any, ...]] = Counter()
    columns = ["proto", "saddr", "sport", "daddr", "dport", "pkts", "bytes", "sappbytes",
               "dappbytes"]
    for row in table.select(columns).to_pylist():
        ends = sorted([(address_to_text(row["saddr"]), row["sport"]),
                       (address_to_text(row["daddr"]), row["dport"])], key=str)
        key = (row["proto"], *ends)
        totals[(*key, "pkts")] += row["pkts"]
        totals[(*key, "bytes")] += row["bytes"]
        totals[(*key, "appbytes")] += (row["sappbytes"] or 0) + (row["dappbytes"] or 0)
    return totals


def offline_records(captures: list[Path], **settings: Any) -> pa.Table:
    options = {"status_interval": 60.0, "user_data_len": 128, "appbytes": True,
               "srcid": "test-sensor"} | settings
    batches = [batch for capture in captures
               for batch in flows_from_file(capture, CaptureSettings(**options))]
    return pa.Table.from_batches(batches)


def read_status(config_path: Path) -> dict[str, Any]:
    path = config_path.parent / "data" / "capture-status.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def start_live_daemon(pair: VethPair, config_path: Path, log_path: Path,
                      env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            pair.in_receiver([sys.executable, "-m", "worker.capture_daemon", "--config",
                              str(config_path)]),
            cwd=REPO, env=env or service_env(config_path), stdout=log,
            stderr=subprocess.STDOUT)

    def running() -> bool:
        if process.poll() is not None:
            pytest.fail(f"daemon exited with {process.returncode}: {log_path.read_text()}")
        status = read_status(config_path)
        return status.get("state") == "running" and status.get("pid") == process.pid

    wait_for(running, 60, "the capture daemon to start capturing")
    return process


def packets_seen(config_path: Path, count: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = read_status(config_path)
        return status if status.get("packets", 0) >= count else None

    return check


def test_live_daemon_matches_offline(veth_pair: VethPair, corpus_dir: Path,  # noqa: F811
                                     write_sensor_config: Callable[..., Path],
                                     tmp_path: Path) -> None:
    captures = [corpus_dir / name for name in SMALL_CAPTURES]
    config_path = write_sensor_config(capture={"source": veth_pair.receiver})
    config = load_config(config_path)
    daemon = start_live_daemon(veth_pair, config_path, tmp_path / "daemon.log")
    try:
        sent = sum(veth_pair.replay(capture) for capture in captures)
        status = wait_for(packets_seen(config_path, sent), 60, f"{sent} packets captured")
        assert status["packets"] == sent
        # Flows stay open (60 s status interval) until SIGTERM writes them out.
        assert read_records(config.archive_dir).num_rows == 0
    finally:
        exit_status = stop_process(daemon)
    log = (tmp_path / "daemon.log").read_text()
    assert exit_status == 0, log

    live = read_records(config.archive_dir)
    assert flow_totals(live) == flow_totals(offline_records(captures))
    final = read_status(config_path)
    assert final["state"] == "stopped"
    assert final["kernel"]["kernel_drops"] == 0
    assert final["kernel"]["kernel_packets"] == sent
    assert final["bytes"] == sum(pa.compute.sum(offline_records([c]).column("bytes")).as_py()
                                 for c in captures)
    assert not (config.archive_dir / ACTIVE_NAME).exists()
    assert f"capturing on {veth_pair.receiver}" in log


def test_cli_capture_interface_with_filter(veth_pair: VethPair, corpus_dir: Path,  # noqa: F811
                                          tmp_path: Path) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    output = tmp_path / "udp.arrows"
    log_path = tmp_path / "cli.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            veth_pair.in_receiver([sys.executable, "-m", "appliance.cli.main", "capture",
                                   "-i", veth_pair.receiver, "-w", str(output), "-A",
                                   "-", "udp"]),
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=log,
            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: process.poll() is None and "listening on" in log_path.read_text(),
                 60, "the capture to start")
        veth_pair.replay(capture)
        expected = offline_records([capture], user_data_len=0)
        udp = expected.filter(pa.compute.equal(expected.column("proto"), 17))
    finally:
        exit_status = stop_process(process)
    assert exit_status == 0, log_path.read_text()
    live = read_records(output)
    assert set(live.column("proto").to_pylist()) == {17}
    assert flow_totals(live) == flow_totals(udp)


def test_cli_rejects_bad_filter_and_interface(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "appliance.cli.main", "capture", "-w",
            str(tmp_path / "out.arrows")]
    bad_filter = subprocess.run([*base, "-i", "lo", "-", "tcp", "prot", "80"], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
    assert bad_filter.returncode == 2
    assert "filter 'tcp prot 80'" in bad_filter.stderr
    missing = subprocess.run([*base, "-i", "wwnosuch0"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2
    assert "interface wwnosuch0: no such network interface" in missing.stderr


def test_sighup_changes_filter_and_snaplen_keeping_open_flows(
        veth_pair: VethPair, corpus_dir: Path,  # noqa: F811
        write_sensor_config: Callable[..., Path], tmp_path: Path) -> None:
    tcp = corpus_dir / "dns-tcp-basic.pcap"
    icmp = corpus_dir / "icmp-ping.pcap"
    dns = corpus_dir / "dns-udp-basic.pcap"
    dns_records = offline_records([dns])
    dns_icmp = dns_records.filter(pa.compute.equal(dns_records.column("proto"), 1))
    assert dns_icmp.num_rows > 0
    config_path = write_sensor_config(capture={"source": veth_pair.receiver})
    config = load_config(config_path)
    daemon = start_live_daemon(veth_pair, config_path, tmp_path / "daemon.log")
    try:
        first = veth_pair.replay(tcp)
        wait_for(packets_seen(config_path, first), 60, "the TCP capture")

        write_sensor_config(capture={"source": veth_pair.receiver, "filter": "tcp prot 80"})
        daemon.send_signal(signal.SIGHUP)
        rejected = wait_for(lambda: read_status(config_path).get("reload_error"), 30,
                            "the invalid filter to be rejected")
        assert "capture.filter" in rejected
        assert "tcp prot 80" in rejected

        write_sensor_config(capture={"source": veth_pair.receiver, "filter": "icmp or tcp",
                                     "snaplen": 200})
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: read_status(config_path).get("filter") == "icmp or tcp", 30,
                 "the new filter to be attached")
        assert read_status(config_path)["snaplen"] == 200
        assert read_status(config_path)["reload_error"] is None

        # The TCP flow from before the reload is still open: its packets join it.
        second = veth_pair.replay(tcp) + veth_pair.replay(icmp)
        # Only the ICMP port-unreachable replies of this DNS capture pass the new filter.
        veth_pair.replay(dns)
        second += pa.compute.sum(dns_icmp.column("pkts")).as_py()
        wait_for(packets_seen(config_path, first + second), 60, "the second capture")
        assert read_records(config.archive_dir).num_rows == 0, "no flow may have been cut"
    finally:
        exit_status = stop_process(daemon)
    log = (tmp_path / "daemon.log").read_text()
    assert exit_status == 0, log
    assert "configuration reload rejected" in log

    live = read_records(config.archive_dir)
    expected = offline_records([tcp, tcp, icmp])
    assert read_status(config_path)["packets"] == first + second
    assert set(live.column("proto").to_pylist()) == {1, 6}
    tcp_live = live.filter(pa.compute.equal(live.column("proto"), 6))
    assert tcp_live.num_rows == 1, "the TCP flow must be one record across the reload"
    assert flow_totals(live) == flow_totals(expected) + flow_totals(dns_icmp)


def test_sighup_user_data_length_writes_open_flows_first(
        veth_pair: VethPair, corpus_dir: Path,  # noqa: F811
        write_sensor_config: Callable[..., Path], tmp_path: Path) -> None:
    capture = corpus_dir / "http-wikipedia.pcap"
    config_path = write_sensor_config(capture={"source": veth_pair.receiver})
    config = load_config(config_path)
    daemon = start_live_daemon(veth_pair, config_path, tmp_path / "daemon.log")
    try:
        sent = veth_pair.replay(capture)
        wait_for(packets_seen(config_path, sent), 60, "the capture")
        write_sensor_config(capture={"source": veth_pair.receiver, "user_data_len": 16})
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: read_records(config.archive_dir).num_rows > 0, 30,
                 "open flows to be written out before the new -U applies")
        sent += veth_pair.replay(capture)
        wait_for(packets_seen(config_path, sent), 60, "the second capture")
    finally:
        exit_status = stop_process(daemon)
    assert exit_status == 0, (tmp_path / "daemon.log").read_text()
    live = read_records(config.archive_dir)
    assert flow_totals(live) == flow_totals(offline_records([capture, capture]))
    lengths = {len(value) for value in live.column("suser").to_pylist() if value}
    assert max(lengths) == 128, "records written out before the reload keep -U 128"
    assert 16 in lengths, "records of the second replay use -U 16"


def test_kill_then_restart_keeps_flushed_records(
        veth_pair: VethPair, corpus_dir: Path,  # noqa: F811
        write_sensor_config: Callable[..., Path], tmp_path: Path) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    config_path = write_sensor_config(capture={"source": veth_pair.receiver,
                                               "status_interval": 1})
    config = load_config(config_path)
    log_path = tmp_path / "daemon.log"
    daemon = start_live_daemon(veth_pair, config_path, log_path)
    try:
        veth_pair.replay(capture, pps=100, loops=3)  # about 4 s: several status ticks
        status = wait_for(lambda: (s := read_status(config_path)).get("records", 0) > 0 and s,
                          30, "records to be written")
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
    assert (config.archive_dir / ACTIVE_NAME).exists()
    survived = read_records(config.archive_dir)
    assert survived.num_rows >= status["records"]

    daemon = start_live_daemon(veth_pair, config_path, log_path)
    try:
        sent = veth_pair.replay(capture)
        wait_for(packets_seen(config_path, sent), 60, "the capture after the restart")
    finally:
        exit_status = stop_process(daemon)
    assert exit_status == 0, log_path.read_text()
    assert re.search(r"moved \S*flows\.active\.arrows left by an earlier run", log_path.read_text())
    after = read_records(config.archive_dir)
    assert after.num_rows >= survived.num_rows + read_status(config_path)["records"]
    before_kill = flow_totals(survived)
    total = flow_totals(after)
    assert all(total[key] >= value for key, value in before_kill.items())


def test_live_rotation_by_wall_time(veth_pair: VethPair, corpus_dir: Path,  # noqa: F811
                                    write_sensor_config: Callable[..., Path],
                                    tmp_path: Path) -> None:
    capture = corpus_dir / "dns-udp-basic.pcap"
    config_path = write_sensor_config(capture={"source": veth_pair.receiver,
                                               "status_interval": 1, "rotate_seconds": 1})
    config = load_config(config_path)
    daemon = start_live_daemon(veth_pair, config_path, tmp_path / "daemon.log")
    try:
        sent = veth_pair.replay(capture, pps=100, loops=3)
        wait_for(packets_seen(config_path, sent), 60, "the capture")
    finally:
        exit_status = stop_process(daemon)
    assert exit_status == 0, (tmp_path / "daemon.log").read_text()
    files = sorted(config.archive_dir.rglob("flows.*.arrows"))
    assert len(files) >= 3, files
    live = read_records(config.archive_dir)
    assert pa.compute.sum(live.column("pkts")).as_py() == sent
    for file in files:
        stamp = file.name.split(".")[1:7]
        records = read_records(file)
        assert records.num_rows > 0
        assert len(stamp) == 6


def test_invalid_live_settings_name_the_key() -> None:
    cases = {"filter": "tcp prot 80", "snaplen": 20, "fanout_group": 70000,
             "block_timeout_ms": 0, "ring_mb": 0, "rotate_bytes": 100, "promisc": "yes"}
    for key, value in cases.items():
        with pytest.raises(ConfigError) as caught:
            parse_config({"capture": {key: value}}, None)
        assert caught.value.key == f"capture.{key}"
    assert "syntax error" in str(pytest.raises(ConfigError, parse_config,
                                               {"capture": {"filter": "tcp prot 80"}}, None
                                               ).value)
    capture = parse_config({"capture": {"source": "eth0", "filter": " udp port 53 ",
                                        "snaplen": 128, "fanout_group": 7}}, None).capture
    assert (capture.mode, capture.filter, capture.snaplen, capture.fanout_group) == (
        "live", "udp port 53", 128, 7)
