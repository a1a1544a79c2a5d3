"""The Optuna dashboard on a study's storage: bind first (a clear error if the port is taken), then
print the study's URL and serve until interrupted."""

from __future__ import annotations

import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.storages import BaseStorage


class DashboardError(RuntimeError):
    """The dashboard cannot start (the message says what to do)."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """Serves the page's parallel API requests concurrently."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No log line per HTTP request."""

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def study_url(host: str, port: int, storage: BaseStorage, study_name: str) -> str:
    """The dashboard page of the study named ``study_name``."""
    return f"http://{host}:{port}/dashboard/studies/{storage.get_study_id_from_name(study_name)}"


def serve(storage: BaseStorage, study_name: str, host: str, port: int, announce=print) -> None:
    """Serve the dashboard of ``storage`` on ``host:port`` until interrupted; ``announce`` receives
    the URL of ``study_name``'s page once the port is bound."""
    from optuna_dashboard import wsgi

    app = wsgi(storage)
    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as error:
        raise DashboardError(f"cannot listen on {host}:{port} ({error.strerror}); choose another port with "
                             f"--port, e.g. --port {port + 1}") from None
    with server:
        announce(study_url(host, server.server_port, storage, study_name))
        server.serve_forever()
