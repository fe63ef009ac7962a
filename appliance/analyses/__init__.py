"""Analyses over flow record tables: racluster, rasort, ralabel and radump for DNS.

Each takes and returns pyarrow Tables with the flow record schema (``extract_dns``
returns its own DNS schema). racluster groups in compiled (numba) loops, rasort sorts
in polars.
"""

from appliance.analyses.cluster import cluster_records
from appliance.analyses.dns import extract_dns, radump_text
from appliance.analyses.keys import AnalysisKeyError
from appliance.analyses.label import CountryLabeler, LabelError, database_info, label_records
from appliance.analyses.sort import sort_records

__all__ = [
    "AnalysisKeyError",
    "CountryLabeler",
    "LabelError",
    "cluster_records",
    "database_info",
    "extract_dns",
    "label_records",
    "radump_text",
    "sort_records",
]
