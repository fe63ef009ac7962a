"""The flow table: bidirectional flows, argus state and timing, records out."""

from appliance.flows.settings import CaptureSettings
from appliance.flows.table import FlowMeter

__all__ = ["CaptureSettings", "FlowMeter"]
