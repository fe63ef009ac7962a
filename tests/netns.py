"""Network namespaces joined by a veth pair, made by tests and removed afterwards.

Traffic stays inside the pair: the sender namespace replays capture files onto its end
and the receiver namespace captures from the other. No addresses are assigned and IPv6
is off on both ends, so neither kernel adds packets of its own.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import REPO

#: MTU on the pair, above the largest corpus frame.
VETH_MTU = 9000


@dataclass(frozen=True)
class VethPair:
    """Sender namespace and interface, receiver namespace and interface."""

    sender_ns: str
    sender: str
    receiver_ns: str
    receiver: str

    def in_receiver(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.receiver_ns, *command]

    def replay(self, capture: Path, pps: int = 5000, loops: int = 1) -> int:
        """Send every frame of ``capture`` from the sender end; return the frames sent."""
        if shutil.which("tcpreplay"):
            command = ["tcpreplay", "-q", "-i", self.sender, f"--pps={pps}",
                       f"--loop={loops}", str(capture)]
        else:
            script = ("import sys; from scapy.all import rdpcap, sendp; "
                      "sendp(rdpcap(sys.argv[1]) * int(sys.argv[3]), iface=sys.argv[2], "
                      "verbose=False, inter=1.0 / int(sys.argv[4]))")
            command = [sys.executable, "-c", script, str(capture), self.sender, str(loops),
                       str(pps)]
        subprocess.run(["ip", "netns", "exec", self.sender_ns, *command], check=True,
                       capture_output=True, timeout=300, cwd=REPO)
        from appliance.pcapio import read_packets

        return loops * sum(len(batch) for batch in read_packets(capture))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _sysctl(namespace: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", f"{key}={value}"],
                   check=True, capture_output=True, timeout=30)


@pytest.fixture
def veth_pair() -> Iterator[VethPair]:
    """Two fresh namespaces and a veth pair between them; skip where namespaces are refused."""
    tag = secrets.token_hex(3)
    pair = VethPair(f"ww-test-{tag}-tx", f"wwt{tag}a", f"ww-test-{tag}-rx", f"wwt{tag}b")
    try:
        _ip("netns", "add", pair.sender_ns)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        pytest.skip("cannot create a network namespace here (needs root and the ip tool): "
                    f"{detail.decode(errors='replace').strip() or error}")
    try:
        _ip("netns", "add", pair.receiver_ns)
        _ip("link", "add", pair.sender, "netns", pair.sender_ns, "mtu", str(VETH_MTU),
            "type", "veth", "peer", "name", pair.receiver, "netns", pair.receiver_ns,
            "mtu", str(VETH_MTU))
        for namespace, interface in ((pair.sender_ns, pair.sender),
                                     (pair.receiver_ns, pair.receiver)):
            _sysctl(namespace, f"net.ipv6.conf.{interface}.disable_ipv6", "1")
            _ip("-n", namespace, "link", "set", interface, "up")
        yield pair
    finally:
        for namespace in (pair.sender_ns, pair.receiver_ns):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
