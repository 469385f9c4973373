"""The vLLM servers one adaptd process sends work to.

Each request has an affinity key (its adapter's name, or its template prefix's tokens);
servers are ranked for the key by rendezvous hashing and the request goes to the least busy
of the first few healthy ones, so an adapter lives on few servers and their prefix caches
hit, while plain base-model traffic spreads over all of them. A server that fails a request
is skipped until the health poller sees it answer again; one that comes back has lost the
adapters it held.
"""

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field

import httpx

from app.engine.vllm.client import ServerClient

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Server:
    client: ServerClient
    healthy: bool = False
    in_flight: int = 0
    loaded: set[str] = field(default_factory=set)  # adapter names this server holds
    loading: dict[str, asyncio.Lock] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def url(self) -> str:
        return self.client.url

    def forget_all(self) -> None:
        self.loaded.clear()
        self.loading.clear()


def rendezvous_score(key: str, url: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}\x00{url}".encode()).digest()[:8], "big")


class ServerPool:
    def __init__(
        self,
        urls: list[str],
        http: httpx.AsyncClient,
        api_key: str | None = None,
        affinity: int = 2,
    ) -> None:
        if not urls:
            raise ValueError("no vLLM server URLs")
        self.servers = [Server(ServerClient(url, http, api_key)) for url in urls]
        self.affinity = max(1, affinity)

    def pick(self, key: str | None, exclude: set[Server] = frozenset()) -> Server | None:  # type: ignore[assignment]
        healthy = [s for s in self.servers if s.healthy and s not in exclude]
        if not healthy:
            return None
        if key is not None:
            healthy.sort(key=lambda s: rendezvous_score(key, s.url), reverse=True)
            healthy = healthy[: self.affinity]
        return min(healthy, key=lambda s: s.in_flight)

    def mark_down(self, server: Server, reason: str) -> None:
        if server.healthy:
            log.warning("vLLM server %s is down: %s", server.url, reason)
        server.healthy = False
        server.last_error = reason
        server.forget_all()  # whatever it held is gone if it restarts

    async def check(self, server: Server) -> None:
        ok = await server.client.healthy()
        if ok and not server.healthy:
            log.info("vLLM server %s is up", server.url)
            server.forget_all()
            server.last_error = None
        elif not ok and server.healthy:
            self.mark_down(server, "health check failed")
        server.healthy = ok

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(s) for s in self.servers))

    async def poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_all()
            except Exception:  # the poller must outlive any one failure
                log.exception("vLLM health poll failed")

    def any_healthy(self) -> bool:
        return any(s.healthy for s in self.servers)

    def report(self) -> list[dict]:
        return [
            {
                "url": s.url,
                "healthy": s.healthy,
                "in_flight": s.in_flight,
                "adapters": len(s.loaded),
                **({"error": s.last_error} if s.last_error and not s.healthy else {}),
            }
            for s in self.servers
        ]
