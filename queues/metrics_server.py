"""The scheduler's metrics endpoint: ``run_scheduler --metrics-port N`` serves SCHEDULER_REGISTRY."""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from common.metrics_auth import MetricsCredentials, protected_wsgi_app
from queues.metrics import SCHEDULER_REGISTRY

logger = logging.getLogger(__name__)

_server_lock = threading.Lock()
_server_port: int | None = None


def start_scheduler_metrics_server(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside
    """Serve SCHEDULER_REGISTRY over HTTP on ``port`` (once per process), behind the metrics credentials.

    prometheus_client's own server has no authentication, so its WSGI app is
    served here behind the same check as the web's /metrics.
    """
    global _server_port
    with _server_lock:
        if _server_port is not None:
            return
        credentials = MetricsCredentials.from_settings()
        app = protected_wsgi_app(make_wsgi_app(SCHEDULER_REGISTRY), credentials)
        server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
        _server_port = port
    logger.info("scheduler metrics served", extra={"port": port, "authenticated": credentials.configured})
    if not credentials.configured and not credentials.open_without_credentials:
        logger.warning("scheduler metrics refuse every scrape: set EDM_METRICS_TOKEN", extra={"port": port})


class _QuietHandler(WSGIRequestHandler):
    """No access-log line on stderr for every scrape."""

    def log_message(self, format: str, *args: object) -> None:
        pass
