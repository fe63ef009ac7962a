"""Sensor services: the capture daemon, and the Celery app and tasks that run analyses."""

# First, so that its allocator and thread settings apply before NumPy and pyarrow load.
import appliance  # noqa: F401
