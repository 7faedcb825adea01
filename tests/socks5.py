"""A tiny SOCKS5 proxy for the tests (RFC 1928): no authentication, CONNECT only, loopback only.

It stands in for Tor's SocksPort. It listens on 127.0.0.1, connects only to loopback
destinations (anything else is answered "not allowed by ruleset"), and counts what it carried:
connections, their destinations, bytes each way. It runs its own event loop in a thread, so
synchronous tests can start it, read its counters and close it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import threading
from collections import Counter

from toxbridge.config import is_loopback

VERSION = 5
NO_AUTH, NO_ACCEPTABLE = 0x00, 0xFF
CONNECT = 1
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4
# Replies (RFC 1928 section 6)
SUCCEEDED, FAILURE, NOT_ALLOWED, REFUSED, COMMAND_NOT_SUPPORTED, ATYP_NOT_SUPPORTED = 0, 1, 2, 5, 7, 8


class Socks5Error(Exception):
    """A request the proxy refuses; `reply` is the code it answers (None: no method acceptable)."""

    def __init__(self, reply: int | None, text: str) -> None:
        super().__init__(text)
        self.reply = reply


class Socks5Proxy:
    def __init__(self, host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{host} is not a loopback address")
        self.host = host
        self.port = 0
        self.connections = 0  # CONNECT requests that reached their destination
        self.refused: list[str] = []  # requests answered with an error, and why
        self.targets: Counter = Counter()  # "host:port" → connections made to it
        self.address_types: Counter = Counter()  # how clients named destinations: ipv4, ipv6, domain
        self.bytes_up = 0  # client → destination
        self.bytes_down = 0  # destination → client
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="socks5", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # ---- life cycle (called from the test's thread)

    def start(self) -> Socks5Proxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.host, 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def shut() -> None:
            assert self._server is not None, "start() first"
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            # The loop is the proxy's own: every other task on it serves a client, and ends once
            # its closed sockets report EOF. (Cancelling them makes Python 3.11's streams log a
            # spurious CancelledError.)
            clients = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if clients:
                await asyncio.wait(clients, timeout=5)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Socks5Proxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def bytes_total(self) -> int:
        return self.bytes_up + self.bytes_down

    # ---- one client

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                host, port = await self._handshake(reader, writer)
            except Socks5Error as e:
                self._refuse(writer, e.reply, str(e))
                return
            try:
                up_reader, upstream = await asyncio.open_connection(host, port)
            except OSError as e:
                self._refuse(writer, REFUSED, f"{host}:{port}: {e}")
                return
            self._writers.add(upstream)
            writer.write(bytes([VERSION, SUCCEEDED, 0]) + _address(*upstream.get_extra_info("sockname")[:2]))
            with self._lock:
                self.connections += 1
                self.targets[f"{host}:{port}"] += 1
            await asyncio.gather(
                self._pump(reader, upstream, "bytes_up"), self._pump(up_reader, writer, "bytes_down")
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int]:
        """Method negotiation and the request; returns the destination or raises Socks5Error."""
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != VERSION or NO_AUTH not in methods:
            writer.write(bytes([VERSION, NO_ACCEPTABLE]))
            raise Socks5Error(None, f"version {version}, methods {methods.hex()}: no acceptable method")
        writer.write(bytes([VERSION, NO_AUTH]))
        version, command, _reserved, atyp = await reader.readexactly(4)
        if version != VERSION:
            raise Socks5Error(FAILURE, f"request version {version}")
        if atyp == ATYP_IPV4:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif atyp == ATYP_IPV6:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        elif atyp == ATYP_DOMAIN:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode("ascii", "replace")
        else:
            raise Socks5Error(ATYP_NOT_SUPPORTED, f"address type {atyp}")
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        with self._lock:
            self.address_types[{ATYP_IPV4: "ipv4", ATYP_IPV6: "ipv6", ATYP_DOMAIN: "domain"}[atyp]] += 1
        if command != CONNECT:
            raise Socks5Error(COMMAND_NOT_SUPPORTED, f"command {command} to {host}:{port}")
        if not is_loopback(host):
            raise Socks5Error(NOT_ALLOWED, f"{host}:{port} is not on loopback")
        return host, port

    def _refuse(self, writer: asyncio.StreamWriter, reply: int | None, why: str) -> None:
        with self._lock:
            self.refused.append(why)
        if reply is not None:
            writer.write(bytes([VERSION, reply, 0]) + _address("0.0.0.0", 0))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: str) -> None:
        try:
            while data := await reader.read(65536):
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(data))
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            if writer.can_write_eof():
                try:
                    writer.write_eof()
                except (OSError, RuntimeError):
                    pass


def _address(host: str, port: int) -> bytes:
    """ATYP, address and port as a reply carries them."""
    ip = ipaddress.ip_address(host)
    atyp = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
    return bytes([atyp]) + ip.packed + struct.pack("!H", port)
