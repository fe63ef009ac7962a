"""Sensor services: the capture daemon, and the Celery app and tasks that run analyses."""
