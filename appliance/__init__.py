"""Wirewatch domain core: packets to flow records, archives, and ra-style analyses.

Nothing in this package imports Flask or Celery; the worker and the API call it.
"""

__version__ = "0.1.0"

import os as _os

# polars allocates through jemalloc, which by default keeps freed pages for seconds. A
# large sort frees hundreds of MB just before its result is gathered, so return freed
# pages at once to keep the peak low. A value set by the user wins.
_os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
# pyarrow allocates through mimalloc, which by default gives freed pages back to the
# system after 10 ms. Formatting and gathering allocate and free large buffers batch
# after batch, and the page faults of taking them back cost as much system time as the
# work itself (printing 200,000 records: 0.30 s system time, 0.11 s with this). Keep
# freed pages for two seconds; mimalloc still reuses them within the process.
_os.environ.setdefault("MIMALLOC_PURGE_DELAY", "2000")

# Faulting in transparent huge pages for pyarrow's allocations can cost more than the
# work. On a two-core virtual machine, right after argus had run, rasort -w on a million
# records spent 1.5 s of system time zeroing huge pages. With them off it spent 0.3 s,
# and capture ran as fast either way. With this setting, mimalloc turns huge pages off
# for the whole process (prctl PR_SET_THP_DISABLE).
_os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")
# NumPy's OpenBLAS starts a thread per core that spins waiting for work when NumPy is
# imported. Nothing here multiplies matrices, and on a two-core sensor the spinning
# threads took 0.1 s of CPU time from every command.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
