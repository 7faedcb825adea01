"""A Postfix socketmap server (socketmap_table(5)): Postfix asks, per recipient, where mail goes.

Wire format: each request and each reply is one netstring, ``LENGTH ":" DATA ","`` with LENGTH in
decimal. A request is ``NAME KEY`` (split at the first space; the key may hold spaces, e.g. a
quoted local part). A reply is ``OK VALUE``, ``NOTFOUND `` (with the space), ``TEMP REASON`` or
``PERM REASON``; Postfix refuses replies longer than 100000 bytes. Postfix keeps a connection for
many lookups and closes it after 10 s idle (measured; its source also gives a 100 s maximum age
and waits up to 100 s for a reply, so a map function must never block).

Keys are passed to the map functions exactly as Postfix sends them. Measured with Postfix 3.7 as
a transport table (tests/test_socketmap.py): trivial-rewrite asks the full address in the case
the client wrote it (``Bob@Example.ORG`` arrives as is), envelope senders as well as recipients,
and ``*``; never a bare domain, never the address without its +extension. So case folding (and
any extension stripping) is the map function's job, and it must answer ``*`` with None: an OK
for ``*`` would route all mail there. A key that is not UTF-8 is NOTFOUND without asking.

Protocol code (Decoder, encode, answer) does no I/O; start_server is the thin asyncio layer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..config import Endpoint
from .listen import Connections, close_connection

log = logging.getLogger("toxbridge.socketmap")

# Postfix's own limit on a reply (DICT_SOCKMAP_DEF_MAX_REPLY), taken for requests as well: a
# request is a map name and one address, far below it.
MAX_SIZE = 100_000
# A connection that sends nothing for this long is closed. Postfix itself closes its idle
# connections after 10 s, so only a stuck or foreign client ever hits this.
IDLE_TIMEOUT = 300.0
READ_SIZE = 4096

MapFunction = Callable[[str], "str | None"]


class SocketmapError(ValueError):
    """The peer sent something that is not a netstring within the limits; the connection ends."""


class Decoder:
    """Netstrings from a byte stream: ``feed(data)`` returns every request completed by `data`
    (none: it waits for more) and keeps the rest for the next call. Limits are checked while
    parsing: a length over `limit`, or with more digits than `limit` has, fails before its data
    is waited for. Garbage raises SocketmapError; requests completed before it in the same data
    are returned first and the error is raised by the next call (and kept in `error`), so the
    outcome is the same wherever the stream was cut."""

    def __init__(self, limit: int = MAX_SIZE) -> None:
        self.limit = limit
        self._max_digits = len(str(limit))
        self._buf = bytearray()
        self._need: int | None = None  # payload length once the "LENGTH:" prefix is read
        self.error: SocketmapError | None = None  # garbage seen; the connection must end

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads completed by `data`; SocketmapError on garbage (and on every call after)."""
        if self.error:
            raise self.error
        self._buf += data
        done: list[bytes] = []
        try:
            while True:
                if self._need is None:
                    colon = self._buf.find(b":", 0, self._max_digits + 1)
                    digits = self._buf[:colon] if colon >= 0 else self._buf
                    if not digits.isdigit() and digits:
                        raise SocketmapError(
                            f"netstring length is not a decimal number: {bytes(digits[:20])!r}"
                        )
                    if colon < 0:
                        if len(self._buf) > self._max_digits:
                            raise SocketmapError(f"netstring longer than {self.limit} bytes")
                        return done
                    if colon == 0:
                        raise SocketmapError("netstring without a length")
                    need = int(digits)
                    if need > self.limit:
                        raise SocketmapError(f"netstring of {need} bytes, more than {self.limit}")
                    del self._buf[: colon + 1]
                    self._need = need
                if len(self._buf) < self._need + 1:
                    return done
                if self._buf[self._need] != ord(","):
                    raise SocketmapError("netstring does not end with a comma")
                payload = bytes(self._buf[: self._need])
                del self._buf[: self._need + 1]
                self._need = None
                done.append(payload)
        except SocketmapError as e:
            self.error = e
            if done:
                return done
            raise

    @property
    def partial(self) -> bool:
        """True while bytes of an unfinished netstring are held."""
        return bool(self._buf) or self._need is not None


def encode(payload: bytes) -> bytes:
    if len(payload) > MAX_SIZE:
        raise ValueError(f"socketmap reply of {len(payload)} bytes, Postfix takes at most {MAX_SIZE}")
    return b"%d:%s," % (len(payload), payload)


def ok(value: str) -> bytes:
    return encode(b"OK " + value.encode())


def notfound() -> bytes:
    return encode(b"NOTFOUND ")


def temp(reason: str) -> bytes:
    return encode(b"TEMP " + _one_line(reason).encode())


def perm(reason: str) -> bytes:
    return encode(b"PERM " + _one_line(reason).encode())


def _one_line(text: str) -> str:
    # Postfix logs the reason (first 200 characters); keep it one printable line.
    return " ".join(text.split())[:200]


def answer(request: bytes, maps: dict[str, MapFunction]) -> bytes:
    """The encoded reply to one request payload (``NAME KEY``). Never raises."""
    name_b, space, key_b = request.partition(b" ")
    name = name_b.decode("ascii", "replace")
    if not space:
        return perm("request is not NAME KEY")
    function = maps.get(name)
    if function is None:
        return perm(f"no such map: {name[:50]}")
    try:
        key = key_b.decode("utf-8")
    except UnicodeDecodeError:
        # Postfix sends addresses as UTF-8 (SMTPUTF8) or ASCII; no contact has another key.
        log.warning("socketmap %s: key is not UTF-8: %r", name, key_b[:100])
        return notfound()
    try:
        value = function(key)
        if value is None:
            reply = notfound()
        else:
            reply = ok(value)
    except Exception as e:  # the map's bug must not become Postfix's routing decision
        log.exception("socketmap %s: lookup of %r failed", name, key)
        return temp(f"toxbridge {name} lookup failed: {type(e).__name__}")
    log.debug("socketmap %s %r -> %s", name, key, reply.partition(b":")[2][:-1].decode(errors="replace"))
    return reply


async def _serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, maps: dict[str, MapFunction]
) -> None:
    decoder = Decoder()
    peer = writer.get_extra_info("peername") or "unix socket"
    try:
        while True:
            data = await asyncio.wait_for(reader.read(READ_SIZE), IDLE_TIMEOUT)
            if not data:
                if decoder.partial:
                    log.info("socketmap client %s left in the middle of a request", peer)
                return
            replies = [answer(request, maps) for request in decoder.feed(data)]
            if replies:
                writer.write(b"".join(replies))
                await writer.drain()
            if decoder.error:
                raise decoder.error
    except SocketmapError as e:
        log.warning("socketmap client %s: %s; closing the connection", peer, e)
    except TimeoutError:
        log.info("socketmap client %s idle for %.0f s; closing the connection", peer, IDLE_TIMEOUT)
    except ConnectionError:
        pass
    finally:
        await close_connection(writer)


class SocketmapServer(asyncio.AbstractServer):
    """asyncio's server, whose close() also ends the open connections (Postfix keeps one open
    for up to 100 s): Postfix then sees the map go away at once, as when the bridge process ends,
    and wait_closed() returns when every connection's handler has finished."""

    def __init__(self, maps: dict[str, MapFunction]) -> None:
        maps = dict(maps)
        self._connections = Connections(lambda reader, writer: _serve(reader, writer, maps), "socketmap")

    @property
    def _listening(self) -> asyncio.Server:
        return self._connections.server

    def close(self) -> None:
        self._listening.close()
        for writer in self._connections.open.values():
            writer.close()

    async def wait_closed(self) -> None:
        await self._listening.wait_closed()
        if self._connections.open:
            await asyncio.gather(*self._connections.open, return_exceptions=True)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._listening.get_loop()

    def is_serving(self) -> bool:
        return self._listening.is_serving()

    async def start_serving(self) -> None:
        await self._listening.start_serving()

    async def serve_forever(self) -> None:
        await self._listening.serve_forever()

    @property
    def sockets(self):
        return self._listening.sockets


async def start_server(endpoint: Endpoint, maps: dict[str, MapFunction]) -> asyncio.AbstractServer:
    """Serve `maps` (map name -> function(key) returning the OK value or None for NOTFOUND) on
    `endpoint`. The functions run on the event loop: they must not block."""
    server = SocketmapServer(maps)
    await server._connections.listen(endpoint)
    return server
