"""systemd's notify protocol: READY, STATUS and WATCHDOG datagrams to $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Send state to the service manager; does nothing when $NOTIFY_SOCKET is unset."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        owned = not pid or pid == str(os.getpid())
        #: Seconds between watchdog pings: half the interval systemd enforces.
        self.watchdog_period = int(usec) / 2e6 if usec.isdigit() and owned else None
        self._last_ping = 0.0
        self._socket: socket.socket | None = None
        if self.address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def notify(self, *lines: str) -> None:
        """Send ``lines`` (``READY=1``, ``STATUS=...``) as one datagram."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(lines).encode(), self.address)
        except OSError as error:
            log.error("cannot notify the service manager at %s: %s", self.address,
                      error.strerror)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def heartbeat(self) -> None:
        """Ping the watchdog if half its interval has passed since the last ping."""
        if self.watchdog_period is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_period:
            self.notify("WATCHDOG=1")
            self._last_ping = now

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
