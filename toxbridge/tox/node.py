"""ToxNode: one Tox instance driven by an asyncio event loop.

Threading model: the event-loop thread owns the instance. Every toxcore call is
made on that thread; a loop task calls tox_iterate and sleeps for
tox_iteration_interval() ms, capped at `max_interval_ms` (the cap bounds the idle
50 ms interval; toxcore's own 1 ms interval during transfers is always honoured).
toxcore reads its sockets only inside tox_iterate, so every hop of a mail (offer, resume,
answer) waited up to the idle interval on each side: for BUSY_SECONDS after any event or
any send of ours the loop iterates every BUSY_INTERVAL_MS instead.

Events fire inside tox_iterate, on the loop thread, and call the optional methods
of `node.handler` (missing methods are skipped). Handlers must not block. An
exception raised by a handler is logged with its traceback on the
"toxbridge.tox" logger and the loop keeps iterating.

Handler methods (all optional):

    on_self_connection(node, status)
    on_friend_request(node, public_key, message)
    on_friend_message(node, friend, kind, text)
    on_friend_name(node, friend, name)
    on_friend_connection(node, friend, status)
    on_lossless_packet(node, friend, data)
    on_lossy_packet(node, friend, data)
    on_file_recv(node, friend, file_number, kind, size, filename)
    on_file_recv_chunk(node, friend, file_number, position, data)   # b"" = complete
    on_file_chunk_request(node, friend, file_number, position, length)  # 0 = done
    on_file_recv_control(node, friend, file_number, control)
    on_read_receipt(node, friend, message_id)   # the friend's client got our chat message

toxcore drops every transfer of a friend that goes offline without telling
anyone; ToxNode then calls on_file_recv_control(..., FILE_CONTROL_CANCEL) for each
transfer it knew was open with that friend, so that one code path handles both.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable

from .binding import Tox
from .errors import ToxError, ToxNotFoundError, ToxPortError, ToxValueError
from .library import (
    CONNECTION_NONE,
    FILE_CONTROL_CANCEL,
    LOSSLESS_PACKET_FIRST_BYTES,
    MAX_STATUS_MESSAGE_LENGTH,
    MESSAGE_ACTION,
    MESSAGE_NORMAL,
)
from .options import ToxOptions, build

log = logging.getLogger("toxbridge.tox")

# After traffic, iterate this often for this long (see the module docstring).
BUSY_INTERVAL_MS = 2
BUSY_SECONDS = 1.0

# event name from binding.Tox -> handler method name
_HANDLER_NAMES = {
    "self_connection_status": "on_self_connection",
    "friend_request": "on_friend_request",
    "friend_message": "on_friend_message",
    "friend_name": "on_friend_name",
    "friend_connection_status": "on_friend_connection",
    "friend_lossless_packet": "on_lossless_packet",
    "friend_lossy_packet": "on_lossy_packet",
    "file_recv": "on_file_recv",
    "file_recv_chunk": "on_file_recv_chunk",
    "file_chunk_request": "on_file_chunk_request",
    "file_recv_control": "on_file_recv_control",
    "friend_read_receipt": "on_read_receipt",
}

_OUT, _IN = "out", "in"


class ToxNode:
    """One Tox instance, safe to use from one asyncio event loop (see module doc)."""

    def __init__(
        self, options: ToxOptions, savedata: bytes | None = None, name: str = "", *, max_interval_ms: int = 20
    ) -> None:
        self._busy_until = 0.0
        if max_interval_ms < 1:
            raise ValueError("max_interval_ms must be >= 1")
        self.options = options
        self.max_interval_ms = max_interval_ms
        self.handler: object | None = None
        self._owner = threading.get_ident()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._started = False
        self._waiters: list[asyncio.Future] = []
        self._transfers: dict[int, set[tuple[str, int]]] = {}
        opts = build(options, savedata)
        try:
            self._tox = Tox(opts, self._on_event)
        finally:
            opts.close()  # tox_new copied what it needs
        try:
            if name:
                self._tox.set_name(name.encode())
            self.address: bytes = self._tox.address()
            self.public_key: bytes = self._tox.public_key()
        except BaseException:
            self._tox.kill()
            raise

    def __repr__(self) -> str:
        # no toxcore call here: repr() runs in log formatting, on any thread
        return f"<ToxNode {self.public_key.hex()[:8].upper()}>"

    # ------------------------------------------------------------ guard

    @property
    def _t(self) -> Tox:
        if threading.get_ident() != self._owner:
            raise RuntimeError(
                "ToxNode used from a thread that does not own it (use loop.call_soon_threadsafe)"
            )
        return self._tox

    # ------------------------------------------------------------ identity

    @property
    def dht_id(self) -> bytes:
        return self._t.dht_id()  # changes on every start

    @property
    def udp_port(self) -> int:
        """Bound UDP port, 0 when UDP is off."""
        try:
            return self._t.udp_port()
        except ToxPortError:
            return 0

    @property
    def tcp_port(self) -> int:
        """Port of our TCP relay server, 0 when none runs."""
        try:
            return self._t.tcp_port()
        except ToxPortError:
            return 0

    def savedata(self) -> bytes:
        return self._t.savedata()

    def set_status_message(self, text: str) -> None:
        """What friends' chat apps show under our name; cut to toxcore's limit on a character."""
        data = text.encode()[:MAX_STATUS_MESSAGE_LENGTH]
        self._t.set_status_message(data.decode("utf-8", "ignore").encode())

    # ------------------------------------------------------------ network

    def bootstrap(self, host: str, port: int, public_key: bytes) -> None:
        self._t.bootstrap(host, port, public_key)

    def add_tcp_relay(self, host: str, port: int, public_key: bytes) -> None:
        self._t.add_tcp_relay(host, port, public_key)

    def self_connection(self) -> int:
        return self._t.self_connection_status()

    # ------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        return not self._tox.alive

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start iterating on `loop` (default: the running loop). Call it on the loop thread."""
        if self._started:
            raise RuntimeError("ToxNode already started")
        if self.closed:
            raise RuntimeError("ToxNode closed")
        loop = loop or asyncio.get_running_loop()
        self._started = True
        self._loop = loop
        self._owner = threading.get_ident()
        self._task = loop.create_task(self._run(), name=f"tox-iterate-{self.public_key.hex()[:8]}")

    async def _run(self) -> None:
        tox = self._tox
        while True:
            try:
                tox.iterate()
            except Exception:
                log.exception("%r: exception inside tox_iterate callback", self)
            cap = BUSY_INTERVAL_MS if time.monotonic() < self._busy_until else self.max_interval_ms
            await asyncio.sleep(min(tox.iteration_interval(), cap) / 1000)

    def _busy(self) -> None:
        self._busy_until = time.monotonic() + BUSY_SECONDS

    async def stop(self) -> None:
        """Stop the iterate task, then tox_kill. Pending waits raise ToxError."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # propagates our own cancellation, not the task's
        self._kill()

    def close(self) -> None:
        """tox_kill a node that was never started (or is already stopped)."""
        if self.running:
            raise RuntimeError("ToxNode is running: await stop()")
        self._kill()

    def _kill(self) -> None:
        if self._tox.alive:
            self._tox.kill()
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(ToxError("ToxNode stopped"))
        self._transfers.clear()

    # ------------------------------------------------------------ friends

    def friend_add(self, address: bytes, message: bytes) -> int:
        return self._t.friend_add(address, message)

    def friend_add_norequest(self, public_key: bytes) -> int:
        return self._t.friend_add_norequest(public_key)

    def friend_delete(self, friend: int) -> None:
        self._t.friend_delete(friend)
        self._transfers.pop(friend, None)

    def readd_friend(self, friend: int) -> bool:
        """Delete the friend and add its key back (no request): toxcore forgets its search state
        for it (see tox/friend_search.py). Only while it keeps its number: toxcore gives an added
        friend the lowest free number, so with a free one below it (a deleted friend's) this does
        nothing and returns False. The caller keeps what toxcore forgets (its last-online time)."""
        numbers = set(self.friends())
        if friend not in numbers or any(n not in numbers for n in range(friend)):
            return False
        public_key = self.friend_public_key(friend)
        self.friend_delete(friend)
        again = self.friend_add_norequest(public_key)
        if again != friend:  # cannot happen by the rule above; say so loudly if toxcore changes it
            raise ToxError(f"friend {friend} came back as {again}")
        return True

    def friend_by_public_key(self, public_key: bytes) -> int | None:
        try:
            return self._t.friend_by_public_key(public_key)
        except ToxNotFoundError:
            return None

    def friend_public_key(self, friend: int) -> bytes:
        return self._t.friend_public_key(friend)

    def friend_label(self, friend: int) -> str:
        """The friend as log lines name it: its key's first 8 hex digits, or #N once it is gone."""
        try:
            return self.friend_public_key(friend).hex()[:8]
        except ToxError:
            return f"#{friend}"

    def friend_connection(self, friend: int) -> int:
        return self._t.friend_connection_status(friend)

    def friend_last_online(self, friend: int) -> int | None:
        """Unix time the friend was last online (survives restarts), None if never seen."""
        when = self._t.friend_last_online(friend)
        return None if when in (0, 2**64 - 1) else when

    def friends(self) -> list[int]:
        return self._t.friend_list()

    def send_message(self, friend: int, text: bytes, action: bool = False) -> int:
        kind = MESSAGE_ACTION if action else MESSAGE_NORMAL
        return self._t.send_message(friend, text, kind)

    def send_lossless_packet(self, friend: int, data: bytes) -> None:
        if not data or data[0] not in LOSSLESS_PACKET_FIRST_BYTES:
            raise ToxValueError(
                "tox_friend_send_lossless_packet: TOX_ERR_FRIEND_CUSTOM_PACKET_INVALID "
                "(first byte must be 160..191)",
                function="tox_friend_send_lossless_packet",
                code=4,
                code_name="TOX_ERR_FRIEND_CUSTOM_PACKET_INVALID",
            )
        self._t.send_lossless_packet(friend, data)
        self._busy()

    def send_lossy_packet(self, friend: int, data: bytes) -> None:
        self._t.send_lossy_packet(friend, data)

    # ------------------------------------------------------------ files

    def file_send(self, friend: int, kind: int, size: int, file_id: bytes, filename: bytes) -> int:
        number = self._t.file_send(friend, kind, size, file_id, filename)
        self._busy()
        self._transfers.setdefault(friend, set()).add((_OUT, number))
        return number

    def file_control(self, friend: int, file_number: int, control: int) -> None:
        self._t.file_control(friend, file_number, control)
        self._busy()
        if control == FILE_CONTROL_CANCEL:
            self._forget(friend, file_number)

    def file_seek(self, friend: int, file_number: int, position: int) -> None:
        self._t.file_seek(friend, file_number, position)

    def file_id(self, friend: int, file_number: int) -> bytes:
        return self._t.file_id(friend, file_number)

    def file_send_chunk(self, friend: int, file_number: int, position: int, data: bytes) -> None:
        self._t.file_send_chunk(friend, file_number, position, data)

    def transfers(self, friend: int) -> set[tuple[str, int]]:
        """Open transfers with `friend` as {("out"|"in", file_number)}."""
        return set(self._transfers.get(friend, ()))

    def _forget(self, friend: int, file_number: int, direction: str | None = None) -> None:
        open_ = self._transfers.get(friend)
        if not open_:
            return
        for d in (direction,) if direction else (_OUT, _IN):
            open_.discard((d, file_number))

    # ------------------------------------------------------------ waiting

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until predicate() is true; it is re-checked after every connection event.

        Raises TimeoutError after `timeout` seconds, ToxError if the node stops.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.closed:
                    raise ToxError("ToxNode stopped")
                fut = loop.create_future()
                self._waiters.append(fut)
                try:
                    await fut
                finally:
                    if fut in self._waiters:
                        self._waiters.remove(fut)

    async def wait_connected(self, timeout: float) -> None:
        await self.wait_until(lambda: self.self_connection() != CONNECTION_NONE, timeout)

    async def wait_friend_connected(self, friend: int, timeout: float) -> None:
        await self.wait_until(lambda: self.friend_connection(friend) != CONNECTION_NONE, timeout)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------ events

    def _on_event(self, event: str, *args) -> None:
        self._busy()
        if event == "friend_connection_status":
            friend, status = args
            self._wake()
            if status == CONNECTION_NONE:
                self._emit("friend_connection_status", friend, status)
                self._drop_transfers(friend)
                return
        elif event == "self_connection_status":
            self._wake()
        elif event == "file_recv":
            self._transfers.setdefault(args[0], set()).add((_IN, args[1]))
        elif event == "file_recv_chunk":
            if not args[3]:
                self._forget(args[0], args[1], _IN)
        elif event == "file_chunk_request":
            if args[3] == 0:
                self._forget(args[0], args[1], _OUT)
        elif event == "file_recv_control":
            if args[2] == FILE_CONTROL_CANCEL:
                self._forget(args[0], args[1])
        self._emit(event, *args)

    def _drop_transfers(self, friend: int) -> None:
        lost = self._transfers.pop(friend, set())
        for _direction, number in sorted(lost):
            log.info("%r: friend %d went offline; transfer %d lost", self, friend, number)
            self._emit("file_recv_control", friend, number, FILE_CONTROL_CANCEL)

    def _emit(self, event: str, *args) -> None:
        method = getattr(self.handler, _HANDLER_NAMES[event], None)
        if method is None:
            return
        try:
            result = method(self, *args)
        except Exception:
            log.exception("%r: handler %s raised", self, _HANDLER_NAMES[event])
            return
        if inspect.isawaitable(result):
            log.error(
                "%r: handler %s returned an awaitable; handlers must be plain functions",
                self,
                _HANDLER_NAMES[event],
            )
            if inspect.iscoroutine(result):
                result.close()
