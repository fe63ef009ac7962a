"""Wirewatch domain core: packets to flow records, archives, and ra-style analyses.

Nothing in this package imports Flask or Celery; the worker and the API call it.
"""

__version__ = "0.1.0"
