"""Integration tests of the toxcore binding and ToxNode against real toxcore.

Everything stays on 127.0.0.1: one tox-bootstrapd (DHT + TCP relay), two nodes
with local discovery and IPv6 off. Run inside a loopback-only namespace:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/pytest -q tests/test_toxcore.py'

The nodes live on an event loop in a background thread for the whole module (so
they keep iterating between tests); tests submit coroutines to it with `run()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from toxbridge.tox import library
from toxbridge.tox.errors import ToxError, ToxValueError
from toxbridge.tox.library import CONNECTION_NONE, FILE_CONTROL_CANCEL, FILE_CONTROL_RESUME, FILE_KIND_DATA
from toxbridge.tox.node import ToxNode
from toxbridge.tox.options import ToxOptions

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT = 30.0
RECONNECT_TIMEOUT = 120.0  # after a restart: see test_restart_from_savedata_reconnects


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def free_port_both() -> int:
    """A port free for UDP and TCP (bootstrapd uses it for both)."""
    for _ in range(50):
        port = free_port(socket.SOCK_STREAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((LOOPBACK, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


class Bootstrapd:
    """tox-bootstrapd in the foreground, logging to a file in a world-traversable dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="toxbridge-bootstrapd-"))
        os.chmod(self.dir, 0o755)
        self.port = free_port_both()
        self.tcp_port = free_port_both()
        self.log = self.dir / "bootstrapd.log"
        conf = self.dir / "bootstrapd.conf"
        conf.write_text(
            f"port = {self.port}\n"
            f'keys_file_path = "{self.dir}/keys"\n'
            f'pid_file_path = "{self.dir}/bootstrapd.pid"\n'
            "enable_ipv6 = false\n"
            "enable_ipv4_fallback = true\n"
            "enable_lan_discovery = false\n"
            "enable_tcp_relay = true\n"
            f"tcp_relay_ports = [{self.tcp_port}]\n"
            "enable_motd = false\n"
            "bootstrap_nodes = ()\n"
        )
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                ["tox-bootstrapd", "--foreground", "--log-backend=stdout", "--config", str(conf)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.public_key = self._wait_key()

    def _wait_key(self) -> bytes:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tox-bootstrapd exited:\n{self.log.read_text()}")
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("Public Key: "):
                    key = bytes.fromhex(line.split(": ", 1)[1].strip())
                    # the keys file holds public key (32) then secret key (32)
                    assert (self.dir / "keys").read_bytes()[:32] == key
                    return key
            time.sleep(0.05)
        raise RuntimeError(f"tox-bootstrapd gave no public key:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Recorder:
    """Handler that records events and lets tests await them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: list[tuple] = []
        self.changed = asyncio.Event()
        self.accept_requests = True
        self.files: dict[tuple[int, int], bytearray] = {}
        self.outgoing: dict[tuple[int, int], bytes] = {}
        self.on_file_recv_hook = None

    def _add(self, *event) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, match, timeout: float = 10.0) -> tuple:
        async with asyncio.timeout(timeout):
            while True:
                for ev in self.events:
                    if match(ev):
                        return ev
                self.changed.clear()
                await self.changed.wait()

    def on_friend_request(self, node, public_key, message):
        self._add("request", public_key, message)
        if self.accept_requests:
            node.friend_add_norequest(public_key)

    def on_friend_message(self, node, friend, kind, text):
        self._add("message", friend, kind, text)

    def on_friend_connection(self, node, friend, status):
        self._add("friend_connection", friend, status)

    def on_lossless_packet(self, node, friend, data):
        self._add("lossless", friend, data)

    def on_file_recv(self, node, friend, file_number, kind, size, filename):
        self._add("file_recv", friend, file_number, kind, size, filename)
        self.files[(friend, file_number)] = bytearray()  # numbers are reused after a transfer
        if self.on_file_recv_hook is not None:
            self.on_file_recv_hook(node, friend, file_number, kind, size, filename)

    def on_file_recv_chunk(self, node, friend, file_number, position, data):
        buf = self.files[(friend, file_number)]
        if position == 0 and data:
            self._add("file_first_chunk", friend, file_number)
        if not data:
            del self.files[(friend, file_number)]
            self._add("file_done", friend, file_number, bytes(buf))
            return
        assert position == len(buf)
        buf += data

    def on_file_chunk_request(self, node, friend, file_number, position, length):
        if length == 0:
            self._add("file_sent", friend, file_number)
            return
        data = self.outgoing[(friend, file_number)]
        node.file_send_chunk(friend, file_number, position, data[position : position + length])

    def on_file_recv_control(self, node, friend, file_number, control):
        self._add("file_control", friend, file_number, control)


class Lab:
    # set by the lab fixture: two befriended nodes, their friend numbers for each other
    a: ToxNode
    b: ToxNode
    fa: int
    fb: int
    connect_seconds: float

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tox-loop", daemon=True)
        self.thread.start()
        self.bootstrapd = Bootstrapd()
        self.nodes: list[ToxNode] = []

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def _call():
            return fn(*args)

        return self.run(_call())

    def make_node(
        self,
        options: ToxOptions | None = None,
        savedata: bytes | None = None,
        start: bool = True,
        bootstrap: bool = True,
    ) -> ToxNode:
        async def _make():
            node = ToxNode(options or ToxOptions(), savedata=savedata, name="test")
            node.handler = Recorder(self.loop)
            if bootstrap:
                node.bootstrap(LOOPBACK, self.bootstrapd.port, self.bootstrapd.public_key)
                node.add_tcp_relay(LOOPBACK, self.bootstrapd.tcp_port, self.bootstrapd.public_key)
            if start:
                node.start()
            self.nodes.append(node)
            return node

        return self.run(_make())

    def close(self) -> None:
        async def _stop():
            for node in self.nodes:
                await node.stop()

        try:
            self.run(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            self.bootstrapd.stop()


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        a = lab.make_node()
        b = lab.make_node()

        async def befriend():
            t0 = time.monotonic()
            fa = a.friend_add(b.address, b"hello from a")
            assert a.friend_by_public_key(b.public_key) == fa
            assert isinstance(b.handler, Recorder)
            await b.handler.wait_for(lambda ev: ev[0] == "request", CONNECT_TIMEOUT)
            fb = b.friend_by_public_key(a.public_key)
            assert fb is not None
            await a.wait_friend_connected(fa, CONNECT_TIMEOUT)
            await b.wait_friend_connected(fb, CONNECT_TIMEOUT)
            return fa, fb, time.monotonic() - t0

        lab.a, lab.b = a, b
        lab.fa, lab.fb, lab.connect_seconds = lab.run(befriend())
        logging.getLogger("toxbridge.test").warning("friend connection after %.1f s", lab.connect_seconds)
        yield lab
    finally:
        lab.close()


def test_identity_and_friendship(lab):
    a, b = lab.a, lab.b
    assert len(a.address) == library.ADDRESS_SIZE == 38
    assert a.address[:32] == a.public_key and len(a.public_key) == 32
    assert lab.call(lambda: a.friends()) == [lab.fa]
    assert lab.call(a.friend_public_key, lab.fa) == b.public_key
    assert lab.call(b.friend_public_key, lab.fb) == a.public_key
    assert lab.call(a.self_connection) != CONNECTION_NONE
    assert lab.call(a.friend_by_public_key, bytes(32)) is None
    assert lab.call(lambda: a.udp_port) > 0
    assert lab.call(lambda: a.tcp_port) == 0
    assert len(lab.call(lambda: a.dht_id)) == 32
    request = next(ev for ev in b.handler.events if ev[0] == "request")
    assert request == ("request", a.public_key, b"hello from a")


def test_calls_from_another_thread_are_refused(lab):
    with pytest.raises(RuntimeError):
        lab.a.friends()


def test_savedata_round_trip(lab):
    data = lab.call(lab.a.savedata)
    clone = lab.make_node(savedata=data, start=False, bootstrap=False)
    try:
        assert clone.address == lab.a.address
        assert lab.call(clone.friend_by_public_key, lab.b.public_key) == lab.fa
    finally:
        lab.call(clone.close)
        lab.nodes.remove(clone)


def test_messages_both_ways(lab):
    a, b = lab.a, lab.b

    async def exchange():
        t0 = time.monotonic()
        a.send_message(lab.fa, b"ping \xe2\x9c\x89")
        await b.handler.wait_for(lambda ev: ev == ("message", lab.fb, 0, b"ping \xe2\x9c\x89"))
        rtt_half = time.monotonic() - t0
        b.send_message(lab.fb, b"pong", action=True)
        await a.handler.wait_for(lambda ev: ev == ("message", lab.fa, 1, b"pong"))
        big = b"x" * library.MAX_MESSAGE_LENGTH
        a.send_message(lab.fa, big)
        await b.handler.wait_for(lambda ev: ev == ("message", lab.fb, 0, big))
        with pytest.raises(ToxValueError, match="TOX_ERR_FRIEND_SEND_MESSAGE_TOO_LONG"):
            a.send_message(lab.fa, big + b"x")
        with pytest.raises(ToxError, match="TOX_ERR_FRIEND_SEND_MESSAGE_FRIEND_NOT_FOUND"):
            a.send_message(lab.fa + 7, b"nobody")
        return rtt_half

    assert lab.run(exchange()) < 1.0


def test_lossless_packet(lab):
    a, b = lab.a, lab.b
    payload = b"\xa0" + os.urandom(library.MAX_CUSTOM_PACKET_SIZE - 1)

    async def send():
        a.send_lossless_packet(lab.fa, payload)
        await b.handler.wait_for(lambda ev: ev == ("lossless", lab.fb, payload))
        with pytest.raises(ToxValueError, match="INVALID"):
            a.send_lossless_packet(lab.fa, b"\x45 toxav would eat this")

    lab.run(send())


def test_file_transfer(lab):
    a, b = lab.a, lab.b
    data = os.urandom(200 * 1024)
    file_id = hashlib.sha256(data).digest()

    def accept(node, friend, file_number, kind, size, filename):
        assert node.file_id(friend, file_number) == file_id
        node.file_control(friend, file_number, FILE_CONTROL_RESUME)

    b.handler.on_file_recv_hook = accept

    async def transfer():
        t0 = time.monotonic()
        number = a.file_send(lab.fa, FILE_KIND_DATA, len(data), file_id, b"mail.eml")
        a.handler.outgoing[(lab.fa, number)] = data
        assert a.file_id(lab.fa, number) == file_id
        recv = await b.handler.wait_for(lambda ev: ev[0] == "file_recv" and ev[5] == b"mail.eml")
        assert recv[3:5] == (FILE_KIND_DATA, len(data))
        done = await b.handler.wait_for(lambda ev: ev[0] == "file_done" and ev[2] == recv[2], timeout=30)
        seconds = time.monotonic() - t0
        await a.handler.wait_for(lambda ev: ev == ("file_sent", lab.fa, number))
        assert a.transfers(lab.fa) == set() and b.transfers(lab.fb) == set()
        return done[3], seconds

    try:
        received, seconds = lab.run(transfer())
    finally:
        b.handler.on_file_recv_hook = None
    assert received == data
    logging.getLogger("toxbridge.test").warning("200 KiB in %.2f s (%.0f KiB/s)", seconds, 200 / seconds)


def test_cancel_seen_by_other_side(lab):
    a, b = lab.a, lab.b

    def refuse(node, friend, file_number, kind, size, filename):
        node.file_control(friend, file_number, FILE_CONTROL_CANCEL)

    b.handler.on_file_recv_hook = refuse

    async def cancelled():
        number = a.file_send(lab.fa, FILE_KIND_DATA, 5000, None, b"refused.eml")
        a.handler.outgoing[(lab.fa, number)] = bytes(5000)
        await a.handler.wait_for(lambda ev: ev == ("file_control", lab.fa, number, FILE_CONTROL_CANCEL))
        assert (("out", number)) not in a.transfers(lab.fa)
        with pytest.raises(ToxError, match="TOX_ERR_FILE_CONTROL_NOT_FOUND"):
            a.file_control(lab.fa, number, FILE_CONTROL_RESUME)

    try:
        lab.run(cancelled())
    finally:
        b.handler.on_file_recv_hook = None


def test_handler_exception_is_logged_and_loop_goes_on(lab, caplog):
    a, b = lab.a, lab.b

    class Boom(Exception):
        pass

    def explode(node, friend, kind, text):
        if text == b"boom":
            raise Boom("handler failure")
        Recorder.on_friend_message(b.handler, node, friend, kind, text)

    b.handler.on_friend_message = explode

    async def go():
        a.send_message(lab.fa, b"boom")
        a.send_message(lab.fa, b"after boom")
        await b.handler.wait_for(lambda ev: ev == ("message", lab.fb, 0, b"after boom"))

    try:
        with caplog.at_level(logging.ERROR, logger="toxbridge.tox"):
            lab.run(go())
    finally:
        del b.handler.on_friend_message
    records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is Boom]
    assert records and "on_friend_message" in records[0].getMessage()
    assert b.running


def test_bootstrap_rejects_bad_arguments(lab):
    a = lab.a
    with pytest.raises(ToxError, match="public key must be 32 bytes"):
        lab.call(a.bootstrap, LOOPBACK, lab.bootstrapd.port, b"\x01" * 5)
    with pytest.raises(ToxError, match="TOX_ERR_BOOTSTRAP_BAD_PORT"):
        lab.call(a.bootstrap, LOOPBACK, 0, lab.bootstrapd.public_key)
    with pytest.raises(ToxError):
        lab.call(a.add_tcp_relay, LOOPBACK, lab.bootstrapd.tcp_port, b"")


def test_port_in_use(lab):
    port = free_port()
    opts = ToxOptions(start_port=port, end_port=port)
    first = lab.make_node(opts, start=False, bootstrap=False)
    try:
        assert lab.call(lambda: first.udp_port) == port
        with pytest.raises(ToxError, match="tox_new: TOX_ERR_NEW_PORT_ALLOC") as info:
            lab.make_node(opts, start=False, bootstrap=False)
        assert isinstance(info.value, OSError)
    finally:
        lab.call(first.close)
        lab.nodes.remove(first)


def test_bad_savedata_and_proxy(lab):
    with pytest.raises(ToxError, match="TOX_ERR_NEW_LOAD_BAD_FORMAT"):
        lab.make_node(savedata=b"not a tox save" * 4, start=False, bootstrap=False)
    with pytest.raises(ToxValueError, match="proxy_type"):
        lab.make_node(ToxOptions(proxy_type="socks4"), start=False, bootstrap=False)

    async def long_name():
        ToxNode(ToxOptions(udp=False), name="x" * (library.MAX_NAME_LENGTH + 1))

    with pytest.raises(ToxValueError, match="TOX_ERR_SET_INFO_TOO_LONG"):
        lab.run(long_name())


def test_stop_wakes_waiters(lab):
    lonely = lab.make_node(bootstrap=False)

    async def go():
        waiter = asyncio.ensure_future(lonely.wait_connected(30))
        await asyncio.sleep(0.05)
        await lonely.stop()
        with pytest.raises(ToxError, match="stopped"):
            await waiter
        assert lonely.closed

    lab.run(go())
    lab.nodes.remove(lonely)


def test_restart_from_savedata_reconnects(lab):
    """Replaces node b by a restart from its savedata. A restart must bootstrap again
    (the DHT key changes)."""
    a, b = lab.a, lab.b
    saved = lab.call(b.savedata)

    async def down():
        await b.stop()
        await a.handler.wait_for(lambda ev: ev == ("friend_connection", lab.fa, CONNECTION_NONE))

    lab.run(down())
    t0 = time.monotonic()
    # Measured trap: restarting on the same UDP port sometimes reconnects only after
    # ~29 s instead of ~9 s (the peer keeps stale state for that ip:port); a fresh port
    # avoided it in our runs. Allow for the slow case anyway.
    port = free_port()
    b2 = lab.make_node(ToxOptions(start_port=port, end_port=port), savedata=saved)
    assert b2.address == b.address

    # toxcore alone (no re-add, as here) reconnected after a restart at p95 59.9 s in one
    # bench run (tox/friend_search.py); 45 s failed CI once.
    async def reconnect():
        await b2.wait_friend_connected(lab.fb, RECONNECT_TIMEOUT)
        await a.wait_friend_connected(lab.fa, RECONNECT_TIMEOUT)
        b2.send_message(lab.fb, b"back")
        await a.handler.wait_for(lambda ev: ev == ("message", lab.fa, 0, b"back"))

    lab.run(reconnect(), 2 * RECONNECT_TIMEOUT + 30)
    lab.b = b2
    logging.getLogger("toxbridge.test").warning("reconnect after restart: %.1f s", time.monotonic() - t0)


def test_friend_offline_cancels_open_transfers(lab):
    """Last test: it kills node b. toxcore drops the transfers of a friend that goes
    offline without a callback; ToxNode reports them as FILE_CONTROL_CANCEL.

    No reconnect here: a peer killed mid-transfer and restarted on the same port
    reconnected only after ~30 s in our runs.
    """
    a, b = lab.a, lab.b
    b.handler.on_file_recv_hook = lambda node, friend, number, *_: node.file_control(
        friend, number, FILE_CONTROL_RESUME
    )
    size = 64 * 1024 * 1024

    async def go():
        a.handler.events.clear()  # file numbers are reused: forget earlier transfers
        number = a.file_send(lab.fa, FILE_KIND_DATA, size, None, b"huge.eml")
        a.handler.outgoing[(lab.fa, number)] = bytes(size)
        await b.handler.wait_for(lambda ev: ev[0] == "file_first_chunk")
        assert ("out", number) in a.transfers(lab.fa)
        await b.stop()
        await a.handler.wait_for(lambda ev: ev == ("file_control", lab.fa, number, FILE_CONTROL_CANCEL))
        assert ("friend_connection", lab.fa, CONNECTION_NONE) in a.handler.events
        assert a.transfers(lab.fa) == set()

    lab.run(go())
