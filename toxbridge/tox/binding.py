"""One Tox instance over ctypes: toxcore's calls as methods, its callbacks as events.

The library, its declarations and constants are in library.py (with the rules this binding
follows), the errors in errors.py, Tox_Options in options.py.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from ctypes import byref, c_int, c_uint32

from .errors import ToxError, ToxValueError, check
from .library import (
    ADDRESS_SIZE,
    CALLBACKS,
    FILE_ID_LENGTH,
    MAX_HOSTNAME_LENGTH,
    MESSAGE_NORMAL,
    PUBLIC_KEY_SIZE,
    lib,
)
from .options import Options


def _bytes(value: bytes, size: int, what: str, function: str) -> bytes:
    value = bytes(value)
    if len(value) != size:
        raise ToxValueError(f"{function}: {what} must be {size} bytes, got {len(value)}", function=function)
    return value


def _host(host: str, function: str) -> bytes:
    raw = host.encode("ascii") if isinstance(host, str) else bytes(host)
    if not raw or len(raw) > MAX_HOSTNAME_LENGTH or b"\0" in raw:
        raise ToxValueError(f"{function}: bad host {host!r}", function=function)
    return raw


EventSink = Callable[..., None]


class Tox:
    """One Tox instance. Not thread safe: call it from one thread only.

    Events are delivered to `sink(event_name, *args)` from inside `iterate()`;
    all byte buffers are already copied. Event names and arguments:

        self_connection_status(status)
        friend_request(public_key, message)
        friend_message(friend, kind, text)
        friend_name(friend, name)
        friend_connection_status(friend, status)
        friend_lossless_packet(friend, data)
        friend_lossy_packet(friend, data)
        file_recv(friend, file_number, kind, size, filename)
        file_recv_chunk(friend, file_number, position, data)
        file_chunk_request(friend, file_number, position, length)
        file_recv_control(friend, file_number, control)
        friend_read_receipt(friend, message_id)
    """

    def __init__(self, options: Options, sink: EventSink) -> None:
        err = c_int(0)
        ptr = lib.tox_new(options.ptr, byref(err))
        check("tox_new", "NEW", err)
        if not ptr:
            raise ToxError("tox_new: returned NULL", function="tox_new")
        self._ptr = ptr
        self._sink = sink
        self._pending: list[BaseException] = []
        self._cbs: list[object] = []  # keeps every ctypes callback object alive
        self._register()

    # -- lifecycle

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise ToxError("Tox instance already killed")
        return self._ptr

    @property
    def alive(self) -> bool:
        return self._ptr is not None

    def kill(self) -> None:
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            lib.tox_kill(ptr)

    def savedata(self) -> bytes:
        size = lib.tox_get_savedata_size(self.ptr)
        buf = ctypes.create_string_buffer(size)
        lib.tox_get_savedata(self.ptr, buf)
        return buf.raw[:size]

    # -- event loop

    def iteration_interval(self) -> int:
        return lib.tox_iteration_interval(self.ptr)

    def iterate(self) -> None:
        """Run tox_iterate; re-raise the first exception a callback raised (others are chained)."""
        lib.tox_iterate(self.ptr, None)
        if self._pending:
            errors, self._pending = self._pending, []
            first = errors[0]
            if len(errors) > 1:
                first.add_note(f"{len(errors) - 1} more callback exception(s) in this iteration")
            raise first

    def _register(self) -> None:
        sink = self._sink
        pending = self._pending_append
        s = ctypes.string_at

        def guard(fn):
            def tramp(*args):
                try:
                    fn(*args)
                except BaseException as exc:  # noqa: BLE001 - re-raised after tox_iterate
                    pending(exc)

            return tramp

        handlers = {
            "self_connection_status": lambda t, st, u: sink("self_connection_status", st),
            "friend_request": lambda t, pk, msg, n, u: sink(
                "friend_request", s(pk, PUBLIC_KEY_SIZE), s(msg, n) if n else b""
            ),
            "friend_message": lambda t, f, kind, msg, n, u: sink(
                "friend_message", f, kind, s(msg, n) if n else b""
            ),
            "friend_name": lambda t, f, name, n, u: sink("friend_name", f, s(name, n) if n else b""),
            "friend_connection_status": lambda t, f, st, u: sink("friend_connection_status", f, st),
            "friend_lossless_packet": lambda t, f, d, n, u: sink(
                "friend_lossless_packet", f, s(d, n) if n else b""
            ),
            "friend_lossy_packet": lambda t, f, d, n, u: sink(
                "friend_lossy_packet", f, s(d, n) if n else b""
            ),
            "file_recv": lambda t, f, fn, kind, size, name, n, u: sink(
                "file_recv", f, fn, kind, size, s(name, n) if n else b""
            ),
            "file_recv_chunk": lambda t, f, fn, pos, d, n, u: sink(
                "file_recv_chunk", f, fn, pos, s(d, n) if n else b""
            ),
            "file_chunk_request": lambda t, f, fn, pos, n, u: sink("file_chunk_request", f, fn, pos, n),
            "file_recv_control": lambda t, f, fn, ctl, u: sink("file_recv_control", f, fn, ctl),
            "friend_read_receipt": lambda t, f, message_id, u: sink("friend_read_receipt", f, message_id),
        }
        for event, (reg, cbtype) in CALLBACKS.items():
            cb = cbtype(guard(handlers[event]))
            self._cbs.append(cb)
            getattr(lib, reg)(self._ptr, cb)

    def _pending_append(self, exc: BaseException) -> None:
        self._pending.append(exc)

    # -- network

    def bootstrap(self, host: str, port: int, public_key: bytes) -> None:
        self._connect_call("tox_bootstrap", host, port, public_key)

    def add_tcp_relay(self, host: str, port: int, public_key: bytes) -> None:
        self._connect_call("tox_add_tcp_relay", host, port, public_key)

    def _connect_call(self, function: str, host: str, port: int, public_key: bytes) -> None:
        key = _bytes(public_key, PUBLIC_KEY_SIZE, "public key", function)
        raw = _host(host, function)
        if not 0 <= int(port) <= 0xFFFF:
            raise ToxValueError(
                f"{function}: TOX_ERR_BOOTSTRAP_BAD_PORT ({port})",
                function=function,
                code=3,
                code_name="TOX_ERR_BOOTSTRAP_BAD_PORT",
            )
        err = c_int(0)
        getattr(lib, function)(self.ptr, raw, port, key, byref(err))
        check(function, "BOOTSTRAP", err)

    def self_connection_status(self) -> int:
        return lib.tox_self_get_connection_status(self.ptr)

    # -- identity

    def address(self) -> bytes:
        buf = ctypes.create_string_buffer(ADDRESS_SIZE)
        lib.tox_self_get_address(self.ptr, buf)
        return buf.raw

    def public_key(self) -> bytes:
        buf = ctypes.create_string_buffer(PUBLIC_KEY_SIZE)
        lib.tox_self_get_public_key(self.ptr, buf)
        return buf.raw

    def dht_id(self) -> bytes:
        buf = ctypes.create_string_buffer(PUBLIC_KEY_SIZE)
        lib.tox_self_get_dht_id(self.ptr, buf)
        return buf.raw

    def udp_port(self) -> int:
        err = c_int(0)
        port = lib.tox_self_get_udp_port(self.ptr, byref(err))
        check("tox_self_get_udp_port", "GET_PORT", err)
        return port

    def tcp_port(self) -> int:
        err = c_int(0)
        port = lib.tox_self_get_tcp_port(self.ptr, byref(err))
        check("tox_self_get_tcp_port", "GET_PORT", err)
        return port

    def set_name(self, name: bytes) -> None:
        err = c_int(0)
        lib.tox_self_set_name(self.ptr, name, len(name), byref(err))
        check("tox_self_set_name", "SET_INFO", err)

    def set_status_message(self, text: bytes) -> None:
        err = c_int(0)
        lib.tox_self_set_status_message(self.ptr, text, len(text), byref(err))
        check("tox_self_set_status_message", "SET_INFO", err)

    # -- friends

    def friend_add(self, address: bytes, message: bytes) -> int:
        address = _bytes(address, ADDRESS_SIZE, "address", "tox_friend_add")
        message = bytes(message)
        err = c_int(0)
        n = lib.tox_friend_add(self.ptr, address, message, len(message), byref(err))
        check("tox_friend_add", "FRIEND_ADD", err)
        return n

    def friend_add_norequest(self, public_key: bytes) -> int:
        key = _bytes(public_key, PUBLIC_KEY_SIZE, "public key", "tox_friend_add_norequest")
        err = c_int(0)
        n = lib.tox_friend_add_norequest(self.ptr, key, byref(err))
        check("tox_friend_add_norequest", "FRIEND_ADD", err)
        return n

    def friend_delete(self, friend: int) -> None:
        err = c_int(0)
        lib.tox_friend_delete(self.ptr, friend, byref(err))
        check("tox_friend_delete", "FRIEND_DELETE", err)

    def friend_by_public_key(self, public_key: bytes) -> int:
        key = _bytes(public_key, PUBLIC_KEY_SIZE, "public key", "tox_friend_by_public_key")
        err = c_int(0)
        n = lib.tox_friend_by_public_key(self.ptr, key, byref(err))
        check("tox_friend_by_public_key", "FRIEND_BY_PUBLIC_KEY", err)
        return n

    def friend_public_key(self, friend: int) -> bytes:
        buf = ctypes.create_string_buffer(PUBLIC_KEY_SIZE)
        err = c_int(0)
        lib.tox_friend_get_public_key(self.ptr, friend, buf, byref(err))
        check("tox_friend_get_public_key", "FRIEND_GET_PUBLIC_KEY", err)
        return buf.raw

    def friend_connection_status(self, friend: int) -> int:
        err = c_int(0)
        status = lib.tox_friend_get_connection_status(self.ptr, friend, byref(err))
        check("tox_friend_get_connection_status", "FRIEND_QUERY", err)
        return status

    def friend_last_online(self, friend: int) -> int:
        """Unix time the friend was last seen online (kept in savedata); UINT64_MAX if never."""
        err = c_int(0)
        when = lib.tox_friend_get_last_online(self.ptr, friend, byref(err))
        check("tox_friend_get_last_online", "FRIEND_GET_LAST_ONLINE", err)
        return when

    def friend_list(self) -> list[int]:
        # size and list come from two calls; fine because we are the only caller.
        size = lib.tox_self_get_friend_list_size(self.ptr)
        arr = (c_uint32 * max(size, 1))()
        lib.tox_self_get_friend_list(self.ptr, arr)
        return list(arr[:size])

    def send_message(self, friend: int, text: bytes, kind: int = MESSAGE_NORMAL) -> int:
        text = bytes(text)
        err = c_int(0)
        n = lib.tox_friend_send_message(self.ptr, friend, kind, text, len(text), byref(err))
        check("tox_friend_send_message", "FRIEND_SEND_MESSAGE", err)
        return n

    def send_lossless_packet(self, friend: int, data: bytes) -> None:
        self._custom("tox_friend_send_lossless_packet", friend, data)

    def send_lossy_packet(self, friend: int, data: bytes) -> None:
        self._custom("tox_friend_send_lossy_packet", friend, data)

    def _custom(self, function: str, friend: int, data: bytes) -> None:
        data = bytes(data)
        err = c_int(0)
        getattr(lib, function)(self.ptr, friend, data, len(data), byref(err))
        check(function, "FRIEND_CUSTOM_PACKET", err)

    # -- files

    def file_send(self, friend: int, kind: int, size: int, file_id: bytes | None, filename: bytes) -> int:
        fid = None if file_id is None else _bytes(file_id, FILE_ID_LENGTH, "file_id", "tox_file_send")
        filename = bytes(filename)
        err = c_int(0)
        n = lib.tox_file_send(self.ptr, friend, kind, size, fid, filename, len(filename), byref(err))
        check("tox_file_send", "FILE_SEND", err)
        return n

    def file_control(self, friend: int, file_number: int, control: int) -> None:
        err = c_int(0)
        lib.tox_file_control(self.ptr, friend, file_number, control, byref(err))
        check("tox_file_control", "FILE_CONTROL", err)

    def file_seek(self, friend: int, file_number: int, position: int) -> None:
        err = c_int(0)
        lib.tox_file_seek(self.ptr, friend, file_number, position, byref(err))
        check("tox_file_seek", "FILE_SEEK", err)

    def file_id(self, friend: int, file_number: int) -> bytes:
        buf = ctypes.create_string_buffer(FILE_ID_LENGTH)
        err = c_int(0)
        lib.tox_file_get_file_id(self.ptr, friend, file_number, buf, byref(err))
        check("tox_file_get_file_id", "FILE_GET", err)
        return buf.raw

    def file_send_chunk(self, friend: int, file_number: int, position: int, data: bytes) -> None:
        data = bytes(data)
        err = c_int(0)
        lib.tox_file_send_chunk(self.ptr, friend, file_number, position, data, len(data), byref(err))
        check("tox_file_send_chunk", "FILE_SEND_CHUNK", err)
