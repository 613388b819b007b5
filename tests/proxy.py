"""A TCP proxy the tests can cut, to make a real server unreachable without stopping it (other
test runs share the machine's PostgreSQL). It reaches the server by TCP or by a Unix socket (the
embedded stores listen on those), and clients reach it on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit


class Proxy:
    def __init__(self, host: str, port: int = 0) -> None:
        """`host` and `port` of the server, or `host` the path of its Unix socket."""
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a network outage would."""
        if self.server is not None:
            self.server.close()
            for w in list(self.links):
                w.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = self.target
            if host.startswith("/"):
                up_reader, up_writer = await asyncio.open_unix_connection(host)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        self.links |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self.links -= {writer, up_writer}


async def postgres_proxy(dsn: str) -> tuple[Proxy, str]:
    """A started proxy to the PostgreSQL of `dsn`, and the DSN that goes through it."""
    parts = urlsplit(dsn)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    port = parts.port or 5432
    if socket_dir.startswith("/"):
        proxy = Proxy(f"{socket_dir}/.s.PGSQL.{port}")
    else:
        proxy = Proxy(parts.hostname or "127.0.0.1", port)
    await proxy.start()
    user = parts.username or "postgres"
    auth = f"{user}:{parts.password}" if parts.password else user
    return proxy, f"postgresql://{auth}@127.0.0.1:{proxy.port}{parts.path}"


async def redis_proxy(url: str) -> tuple[Proxy, str]:
    """A started proxy to the Redis of `url` (redis:// or unix://), and the URL through it."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        proxy, db = Proxy(parts.path), parse_qs(parts.query).get("db", ["0"])[0]
    else:
        proxy, db = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379), parts.path[1:] or "0"
    await proxy.start()
    return proxy, f"redis://127.0.0.1:{proxy.port}/{db}"
