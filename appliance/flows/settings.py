"""Settings of the flow meter (argus's -S, -U and -A switches, and the sensor id)."""

from __future__ import annotations

from dataclasses import dataclass

#: Largest -U value accepted: argus allows up to 65535 bytes of user data per direction.
MAX_USER_DATA_LEN = 65535


@dataclass
class CaptureSettings:
    """Flow meter settings.

    status_interval: seconds between status records of an active flow (-S); idle
        timeouts are also checked at these ticks, as argus does.
    user_data_len: payload bytes kept per direction and record, 0 = off (-U).
    appbytes: count application (payload) bytes per direction (-A).
    srcid: sensor id written into every record.
    """

    status_interval: float = 60.0
    user_data_len: int = 0
    appbytes: bool = False
    srcid: str = ""

    def __post_init__(self) -> None:
        if not self.status_interval >= 1:
            raise ValueError(
                f"status interval {self.status_interval!r} is invalid; give at least 1 second"
            )
        if not 0 <= self.user_data_len <= MAX_USER_DATA_LEN:
            raise ValueError(
                f"user data length {self.user_data_len!r} is invalid; "
                f"give 0 (off) to {MAX_USER_DATA_LEN} bytes"
            )
