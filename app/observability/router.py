"""GET /metrics on the API port (a platform admin key), and the same text on METRICS_PORT
without a key, for a scraper on a private network."""

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.auth.dependencies import scope_check
from app.auth.service import Principal
from app.errors import PermissionDenied
from app.observability import metrics

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


def platform_admin(principal: Annotated[Principal, Depends(scope_check("admin"))]) -> Principal:
    if not principal.platform:
        raise PermissionDenied("Metrics cover every tenant: they need a platform admin key.")
    return principal


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def prometheus_metrics(request: Request, _: Annotated[Principal, Depends(platform_admin)]):
    body = metrics.render(getattr(request.app.state, "metrics_sampler", None))
    return Response(body, media_type=metrics.CONTENT_TYPE)


def serve_on_port(
    port: int, host: str, sampler: metrics.EngineSampler
) -> ThreadingHTTPServer | None:
    """With several uvicorn workers only the first binds the port; any one of them can serve
    the whole picture (multiprocess mode), so the others just skip it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.render(sampler)
            self.send_response(200)
            self.send_header("Content-Type", metrics.CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # quiet: scrapes are frequent
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError:
        log.info("metrics port %s is served by another process", port)
        return None
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
