"""The prebuilt packet-path kernels against numba's JIT: same records, and no numba import.

The module fixture builds ``appliance/_kernels*.so`` when it is missing or stale, as
``make`` does, so these tests need a C compiler and the Python headers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from appliance import jit
from appliance.build_kernels import type_key

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / ".." / "shared" / "corpus"

#: Corpus captures covering pcap and pcapng, several link types, fragments, ICMP errors,
#: tunnels, damaged files, and enough packets for status ticks and table growth.
CAPTURES = [
    "big-synthetic-mix.pcap",
    "dns-edns-ecs-mixed.pcap",
    "dns-udp-basic.pcap",
    "dns-tcp-multi-nxdomain.pcap",
    "radiotap-arp.pcap",
    "vlan-qinq.pcap",
    "ipv6-in-ipv4.pcap",
    "rawip4-dns.pcap",
    "corrupt-fuzz.pcap",
    "ip4-trunc.pcap",
]
#: (-S, -U, -A) combinations each capture is read with.
SETTINGS = [("86400", "128", True), ("5", "0", False)]

#: Run in a child: capture each file with each setting, then report where the kernels came from.
CAPTURE_SCRIPT = textwrap.dedent("""
    import json, sys
    from appliance import jit
    from appliance.cli.main import main
    out, captures, settings = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    for name in captures:
        for index, (interval, user, appbytes) in enumerate(settings):
            argv = ["capture", "-r", name, "-w", f"{out}/{index}-{name.rsplit('/', 1)[1]}",
                    "-S", interval, "-U", user] + (["-A"] if appbytes else [])
            assert main(argv) == 0, argv
    print(json.dumps({"prebuilt": jit.prebuilt_module() is not None,
                      "jit": jit.uses_jit(), "numba": "numba" in sys.modules}))
""")


def _environment(force_jit: bool) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if key != jit.FORCE_JIT_VARIABLE}
    if force_jit:
        environment[jit.FORCE_JIT_VARIABLE] = "1"
    return environment


def _python(code: str, *args: str, force_jit: bool = False) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            capture_output=True, env=_environment(force_jit), timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def prebuilt() -> None:
    """Make sure a current prebuilt module exists, building it when needed."""
    check = "from appliance import jit; print(jit.prebuilt_module() is not None)"
    if _python(check).strip() == "True":
        return
    build = subprocess.run([sys.executable, "-m", "appliance.build_kernels"], cwd=ROOT,
                           text=True, capture_output=True, env=_environment(False), timeout=900)
    if build.returncode != 0:
        pytest.fail(f"python -m appliance.build_kernels failed:\n{build.stderr[-3000:]}")


@pytest.fixture(scope="module")
def captures() -> list[str]:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus directory {CORPUS} not found")
    return [str((CORPUS / name).resolve()) for name in CAPTURES]


def test_capture_same_bytes_both_ways(prebuilt: None, captures: list[str],
                                      tmp_path: Path) -> None:
    outputs = {}
    for mode in ("prebuilt", "jit"):
        out = tmp_path / mode
        out.mkdir()
        report = _python(CAPTURE_SCRIPT, str(out), json.dumps(captures), json.dumps(SETTINGS),
                         force_jit=mode == "jit")
        outputs[mode] = (out, json.loads(report.splitlines()[-1]))

    prebuilt_report, jit_report = outputs["prebuilt"][1], outputs["jit"][1]
    assert prebuilt_report == {"prebuilt": True, "jit": False, "numba": False}
    assert jit_report == {"prebuilt": False, "jit": True, "numba": True}
    names = sorted(path.name for path in outputs["prebuilt"][0].iterdir())
    assert len(names) == len(CAPTURES) * len(SETTINGS)
    assert names == sorted(path.name for path in outputs["jit"][0].iterdir())
    for name in names:
        prebuilt_bytes = (outputs["prebuilt"][0] / name).read_bytes()
        jit_bytes = (outputs["jit"][0] / name).read_bytes()
        assert prebuilt_bytes == jit_bytes, f"{name}: records differ"


def test_build_check_passes(prebuilt: None) -> None:
    # The check runs synthetic file and live-capture batches, and a flow table growth,
    # on the prebuilt module, and fails when any of them needed numba.
    result = subprocess.run([sys.executable, "-m", "appliance.build_kernels", "--check"],
                            cwd=ROOT, text=True, capture_output=True,
                            env=_environment(False), timeout=600)

    assert result.returncode == 0, result.stderr


#: Run in a child: insert flow keys into a hash index and look them up again, through
#: kernels the prebuilt module does not export (they call other kernels), then capture
#: a file with the exports.
SWITCH_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from appliance import jit
    from appliance.flows import layout
    from appliance.flows.hashtable import KEY_WORDS, find, hash_key, insert
    from appliance.cli.main import main
    before = jit.uses_jit()
    keys = np.arange(3 * KEY_WORDS, dtype=np.uint64).reshape(3, KEY_WORDS)
    index = np.full(8, -1, dtype=np.int32)
    hashes = np.zeros(4, dtype=np.uint32)
    slot_keys = np.zeros((4, KEY_WORDS), dtype=np.uint64)
    free = np.zeros(4, dtype=np.int32)
    meta = np.zeros(layout.META_SIZE, dtype=np.int64)
    found = []
    for row in range(3):
        h = np.uint64(hash_key(keys, row))
        _, bucket = find(index, hashes, slot_keys, keys, row, h)
        insert(index, hashes, slot_keys, free, meta, keys, row, h, bucket)
    for row in range(3):
        h = np.uint64(hash_key(keys, row))
        found.append([int(value) for value in find(index, hashes, slot_keys, keys, row, h)])
    assert main(["capture", "-r", sys.argv[1], "-w", sys.argv[2], "-S", "5", "-U", "64"]) == 0
    print(json.dumps({"before": before, "after": jit.uses_jit(), "found": found,
                      "index": index.tolist()}))
""")


def test_missing_export_switches_to_jit(prebuilt: None, captures: list[str],
                                        tmp_path: Path) -> None:
    capture = captures[CAPTURES.index("dns-edns-ecs-mixed.pcap")]
    switched = json.loads(_python(SWITCH_SCRIPT, capture, str(tmp_path / "switched.arrows")))
    reference = json.loads(_python(SWITCH_SCRIPT, capture, str(tmp_path / "jit.arrows"),
                                   force_jit=True))

    assert switched["before"] is False
    assert switched["after"] is True
    assert switched["found"] == reference["found"]
    assert switched["index"] == reference["index"]
    switched_bytes = (tmp_path / "switched.arrows").read_bytes()
    assert switched_bytes == (tmp_path / "jit.arrows").read_bytes()


def test_stale_module_not_loaded(prebuilt: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(jit.FORCE_JIT_VARIABLE, raising=False)

    module, reason = jit.load_prebuilt("0" * 64)

    assert module is None
    assert "built from other sources" in reason
    assert "python -m appliance.build_kernels" in reason


def test_force_jit_variable(prebuilt: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jit.FORCE_JIT_VARIABLE, "1")

    module, reason = jit.load_prebuilt(jit.source_fingerprint())

    assert module is None
    assert jit.FORCE_JIT_VARIABLE in reason


def test_current_module_loaded(prebuilt: None) -> None:
    # A child process, because this one may hold a stale module imported before the build.
    code = ("import json; from appliance import jit; "
            "module, reason = jit.load_prebuilt(jit.source_fingerprint()); "
            "print(json.dumps([module.__file__ if module else None, reason]))")

    path, reason = json.loads(_python(code))

    assert path is not None
    assert Path(path).parent == ROOT / "appliance"
    assert path in reason


def _values() -> list[object]:
    flows = np.zeros(4, dtype=[("stime", "<i8"), ("macs", "u1", (2, 6)), ("proto", "u1")])
    readonly = np.frombuffer(b"\x00" * 8, dtype=np.uint8)
    return [
        np.zeros((3, 4), dtype=np.int64),
        np.zeros((3, 4), dtype=np.int64, order="F"),
        np.zeros((3, 4), dtype=np.uint8)[:, 1],
        readonly,
        flows,
        flows["proto"],
        np.zeros(2, dtype=np.dtype([("pkts", "<i8"), ("ttl", "u1")], align=True)),
        (np.zeros(2, dtype=np.int32), np.zeros((2, 2), dtype=np.uint64)),
        (np.zeros(2), np.zeros(2)),
        7,
        True,
        2.5,
        np.int32(3),
        np.bool_(False),
        1 << 63,
    ]


@pytest.mark.parametrize("value", _values(), ids=lambda value: type(value).__name__)
def test_value_key_matches_numba_type(value: object) -> None:
    import numba

    assert jit.value_key(value) == type_key(numba.typeof(value))


def test_export_names_differ_by_key() -> None:
    first = jit.export_name("appliance.flows.kernel.run", ("int64",))
    second = jit.export_name("appliance.flows.kernel.run", ("bool",))

    assert first.startswith("appliance_flows_kernel_run__")
    assert first != second
