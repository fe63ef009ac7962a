"""The columnar flow table: its hash index against a dict, growth, and keying rules."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from appliance.flows import CaptureSettings, FlowMeter
from appliance.flows import layout as f
from appliance.flows.hashtable import KEY_WORDS, find, hash_key, insert, remove
from appliance.flows.table import FlowTable
from appliance.pcapio import PacketBatch
from appliance.records import FLOW_SCHEMA

SETTINGS = CaptureSettings(status_interval=86400, user_data_len=16, appbytes=True)


def test_hash_index_matches_dict():
    # Inserts, removals and growth from 64 slots, checked against a dict after each step.
    rng = random.Random(7)
    table = FlowTable(user_data_len=0, slots=64)
    model: dict[tuple[int, ...], int] = {}
    keys = np.zeros((1, KEY_WORDS), dtype=np.uint64)
    for _ in range(5000):
        key = tuple(rng.randrange(5) for _ in range(KEY_WORDS))
        keys[0] = key
        index, hashes, slot_keys, _, free, flows, *_, meta = table.arrays
        h = np.uint64(hash_key(keys, 0))
        slot, bucket = find(index, hashes, slot_keys, keys, 0, h)
        assert (slot >= 0) == (key in model)
        if slot >= 0:
            assert slot == model[key]
            if rng.random() < 0.5:
                remove(index, hashes, free, meta, slot)
                flows[slot]["in_use"] = 0
                del model[key]
        else:
            if meta[f.M_ACTIVE] >= table.slots:
                table.grow()
                index, hashes, slot_keys, _, free, flows, *_, meta = table.arrays
                slot, bucket = find(index, hashes, slot_keys, keys, 0, h)
            model[key] = insert(index, hashes, slot_keys, free, meta, keys, 0, h, bucket)
            flows[model[key]]["in_use"] = 1
        assert meta[f.M_ACTIVE] == len(model)
    assert table.slots > 64


def records(packets: list, times: list[float]) -> pa.Table:
    frames = [bytes(packet) for packet in packets]
    batch = PacketBatch.from_frames(frames, [int(t * 1e6) for t in times])
    meter = FlowMeter(SETTINGS)
    batches = meter.process(batch) + meter.flush()
    return pa.Table.from_batches(batches, schema=FLOW_SCHEMA).sort_by("stime")


def ether(src: str, dst: str):
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst)


def test_dns_transactions_are_keyed_by_id():
    client, server = "10.0.0.1", "10.0.0.2"

    def query(ident):
        return ether(client, server) / UDP(sport=3333, dport=53) / DNS(
            id=ident, qd=DNSQR(qname="a.example"))

    def answer(ident):
        return ether(server, client) / UDP(sport=53, dport=3333) / DNS(id=ident, qr=1)

    table = records([query(1), answer(1), query(2), answer(2), query(1), answer(1)],
                    [1, 1.1, 2, 2.1, 3, 3.1])
    assert table.column("pkts").to_pylist() == [4, 2]
    assert table.column("spkts").to_pylist() == [2, 1]


def test_unanswered_dns_queries_share_one_flow():
    packets = [ether("10.0.0.1", "10.0.0.2") / UDP(sport=3333, dport=53) / DNS(id=ident)
               for ident in (5, 6, 7)]
    table = records(packets, [1, 2, 3])
    assert table.column("pkts").to_pylist() == [3]


def segment(src: str, dst: str, sport: int, dport: int, flags: str, seq: int):
    return ether(src, dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq)


CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def test_syn_after_reset_starts_record():
    reset = [segment(CLIENT, SERVER, 4000, 80, "S", 100), segment(SERVER, CLIENT, 80, 4000, "R", 0),
             segment(CLIENT, SERVER, 4000, 80, "S", 100)]
    table = records(reset, [1, 1.1, 2])
    assert table.column("pkts").to_pylist() == [2, 1]
    assert table.column("ltime").to_pylist()[0].timestamp() == 2  # ends at the new SYN


def closed_connection(payload: bytes) -> list:
    """A handshake, the client's segment with ``payload``, FINs both ways, a new SYN."""
    return [segment(CLIENT, SERVER, 4001, 80, "S", 100),
            segment(SERVER, CLIENT, 80, 4001, "SA", 500),
            segment(CLIENT, SERVER, 4001, 80, "PA", 101) / payload,
            segment(CLIENT, SERVER, 4001, 80, "FA", 101 + len(payload)),
            segment(SERVER, CLIENT, 80, 4001, "FA", 501),
            segment(CLIENT, SERVER, 4001, 80, "S", 900)]


def test_syn_after_empty_close_starts_record():
    table = records(closed_connection(b""), [1, 1.1, 1.15, 1.2, 1.3, 5])
    assert table.column("pkts").to_pylist() == [5, 1]
    assert table.column("state").to_pylist() == ["FIN", "REQ"]


def test_syn_after_data_and_close_joins_flow():
    table = records(closed_connection(b"GET /"), [1, 1.1, 1.15, 1.2, 1.3, 5])
    assert table.column("pkts").to_pylist() == [6]
    assert table.column("state").to_pylist() == ["FIN"]


def test_advance_closes_idle_flow_without_packets():
    start = 1_700_000_000.0
    packet = ether("10.0.0.1", "10.0.0.2") / UDP(sport=40000, dport=9999) / b"ping"
    meter = FlowMeter(CaptureSettings(status_interval=5, user_data_len=0, appbytes=True))
    assert meter.process(PacketBatch.from_frames([bytes(packet)], [int(start * 1e6)])) == []

    assert meter.advance(int((start + 2) * 1e6)) == []
    finished = meter.advance(int((start + 60) * 1e6))

    table = pa.Table.from_batches(finished, schema=FLOW_SCHEMA)
    assert table.num_rows == 1
    assert table.column("dport").to_pylist() == [9999]
    assert meter.stats["flows_active"] == 0


def test_user_data_joins_payloads_across_chunks_and_reversal():
    # Seen from its SYN-ACK, the flow swaps directions when the client speaks, and the
    # server's payload moves with it. 70 bytes per direction span three 32-byte chunks.
    server_data, first, second = b"s" * 40, bytes(range(50)), bytes(range(100, 130))
    packets = [segment(SERVER, CLIENT, 80, 4002, "SA", 500),
               segment(SERVER, CLIENT, 80, 4002, "PA", 501) / server_data,
               segment(CLIENT, SERVER, 4002, 80, "PA", 101) / first,
               segment(CLIENT, SERVER, 4002, 80, "PA", 151) / second]
    meter = FlowMeter(CaptureSettings(status_interval=86400, user_data_len=70, appbytes=True))
    batch = PacketBatch.from_frames([bytes(p) for p in packets], [1_000_000 + k for k in range(4)])
    table = pa.Table.from_batches(meter.process(batch) + meter.flush(), schema=FLOW_SCHEMA)

    assert table.column("sport").to_pylist() == [4002]
    assert table.column("suser").to_pylist() == [(first + second)[:70]]
    assert table.column("duser").to_pylist() == [server_data]


def udp_frame(sport: int, payload: bytes) -> bytes:
    return bytes(ether(CLIENT, SERVER) / UDP(sport=sport, dport=7000) / payload)


def test_status_records_reuse_user_data_chunks():
    # 3,000 flows of 40 payload bytes need 6,000 chunks, more than the pool starts with.
    # Each status record carries only its own interval's payload.
    flows = range(10000, 13000)
    meter = FlowMeter(CaptureSettings(status_interval=1, user_data_len=64, appbytes=True))
    start = 1_700_000_000_000_000
    first = [udp_frame(port, port.to_bytes(2, "big") * 20) for port in flows]
    later = [udp_frame(port, b"L" + port.to_bytes(2, "big") * 10) for port in flows]
    batches = meter.process(PacketBatch.from_frames(first, [start + k for k in flows]))
    batches += meter.process(PacketBatch.from_frames(later, [start + 2_500_000 + k for k in flows]))
    assert len(meter.table.chunk_next) > 4096
    batches += meter.flush()
    table = pa.Table.from_batches(batches, schema=FLOW_SCHEMA).sort_by([("sport", "ascending"),
                                                                        ("stime", "ascending")])

    expected = [payload for pair in zip(
        [port.to_bytes(2, "big") * 20 for port in flows],
        [b"L" + port.to_bytes(2, "big") * 10 for port in flows], strict=True) for payload in pair]
    assert table.column("suser").to_pylist() == expected
    assert table.column("spkts").to_pylist() == [1] * len(expected)


def test_byte_counters_pass_four_gib():
    # 70,000 packets that each were 65,535 bytes on the wire (captured short).
    frame = udp_frame(5000, b"x" * 18)
    single = FlowMeter(SETTINGS)
    one = pa.Table.from_batches(
        single.process(PacketBatch.from_frames([frame], [1_000_000], wirelen=[65535]))
        + single.flush(), schema=FLOW_SCHEMA)
    per_packet = one.column("sbytes")[0].as_py()

    count = 70_000
    meter = FlowMeter(SETTINGS)
    batch = PacketBatch.from_frames([frame] * count, list(range(1_000_000, 1_000_000 + count)),
                                    wirelen=[65535] * count)
    table = pa.Table.from_batches(meter.process(batch) + meter.flush(), schema=FLOW_SCHEMA)

    assert table.column("spkts").to_pylist() == [count]
    assert table.column("sbytes").to_pylist() == [count * per_packet]
    assert count * per_packet > 2**32


def test_sequence_numbers_wrap_as_argus_does():
    # The client's sequence numbers cross 2**32 and no segment acknowledges anything.
    # argus 3.0.8.2 compares sequence numbers as plain unsigned integers, so it marks the
    # segment after the wrap as sent again ("s") with or without a real repeat.
    top = 2**32 - 10

    def exchange(sport: int, repeat: bool) -> list:
        packets = [segment(CLIENT, SERVER, sport, 80, "S", top),
                   segment(SERVER, CLIENT, 80, sport, "SA", 700),
                   segment(CLIENT, SERVER, sport, 80, "A", top + 1),
                   segment(CLIENT, SERVER, sport, 80, "PA", top + 1) / (b"a" * 20),
                   segment(CLIENT, SERVER, sport, 80, "PA", 11) / (b"b" * 10)]
        if repeat:
            packets.append(segment(CLIENT, SERVER, sport, 80, "PA", 11) / (b"b" * 10))
        return packets

    packets = exchange(4100, repeat=False) + exchange(4101, repeat=True)
    table = records(packets, [1 + k / 100 for k in range(len(packets))]).sort_by("sport")

    assert [flgs[3] for flgs in table.column("flgs").to_pylist()] == ["s", "s"]


def test_hold_records_gives_one_batch():
    # 60 short UDP flows, each finished by the status interval of 1 s.
    frames = [udp_frame(6000 + n, b"q") for n in range(60)]
    batches = [PacketBatch.from_frames([frame], [1_000_000 * (n + 1)])
               for n, frame in enumerate(frames)]
    settings = CaptureSettings(status_interval=1, user_data_len=16, appbytes=True)

    def run(hold: bool) -> list[pa.RecordBatch]:
        meter = FlowMeter(settings, hold_records=hold)
        out = []
        for batch in batches:
            out += meter.process(batch)
        return out + meter.flush()

    prompt, held = run(False), run(True)
    assert len(prompt) > 10
    assert len(held) == 1
    assert pa.Table.from_batches(held).equals(pa.Table.from_batches(prompt))


def test_flush_batches_streams_full_outputs():
    from appliance.flows.emit import RECORD_CAPACITY

    count = RECORD_CAPACITY + 100
    frames = [bytes(ether("10.0.0.1", f"10.{1 + n // 60000}.0.2") / UDP(sport=1024 + n % 60000,
                                                                          dport=9) / b"q")
              for n in range(count)]
    batch = PacketBatch.from_frames(frames, list(range(1_000_000, 1_000_000 + count)))
    streamed = FlowMeter(SETTINGS)
    listed = FlowMeter(SETTINGS)
    assert streamed.process(batch) == []
    assert listed.process(batch) == []

    batches = list(streamed.flush_batches())
    assert [b.num_rows for b in batches] == [RECORD_CAPACITY, 100]
    assert pa.Table.from_batches(batches).equals(pa.Table.from_batches(listed.flush()))
    assert streamed.stats["flows_active"] == 0
