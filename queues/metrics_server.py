"""The scheduler's metrics endpoint: ``run_scheduler --metrics-port N`` serves SCHEDULER_REGISTRY."""

from __future__ import annotations

import logging
import threading

from prometheus_client import start_http_server

from queues.metrics import SCHEDULER_REGISTRY

logger = logging.getLogger(__name__)

_server_lock = threading.Lock()
_server_port: int | None = None


def start_scheduler_metrics_server(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside
    """Serve SCHEDULER_REGISTRY over HTTP on ``port`` (once per process)."""
    global _server_port
    with _server_lock:
        if _server_port is not None:
            return
        start_http_server(port, addr=addr, registry=SCHEDULER_REGISTRY)
        _server_port = port
    logger.info("scheduler metrics served", extra={"port": port})
