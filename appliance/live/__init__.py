"""Live capture from a Linux interface: an AF_PACKET TPACKET_V3 ring read in whole blocks."""

from appliance.live.bpf import FilterError, compile_filter
from appliance.live.ring import LiveCaptureError, LiveSettings, RingSource

__all__ = ["FilterError", "LiveCaptureError", "LiveSettings", "RingSource", "compile_filter"]
