"""Wirewatch domain core: packets to flow records, archives, and ra-style analyses.

Nothing in this package imports Flask or Celery; the worker and the API call it.
"""

__version__ = "0.1.0"

import os as _os

# polars allocates through jemalloc, which by default keeps freed pages for seconds. A
# large sort frees hundreds of MB just before its result is gathered, so return freed
# pages at once to keep the peak low. A value set by the user wins.
_os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
