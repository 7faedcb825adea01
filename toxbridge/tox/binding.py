"""Thin ctypes binding over Debian's libtoxcore.so.2 (c-toxcore 0.2.18).

Only what a mail bridge needs: options, lifecycle, savedata, bootstrap, friends,
messages, custom lossless/lossy packets and file transfers.

Rules this module follows (see /work/shared/FACTS.md):

* Tox_Options is only touched through tox_options_new/free and the setters,
  never through a struct layout.
* Constants are read through their getter functions.
* Every ctypes callback object is kept referenced by the owning `Tox` object.
* Callback buffers are copied at once (`ctypes.string_at`); they die after the call.
* An exception raised inside a callback is caught in the trampoline, stored, and
  re-raised by `Tox.iterate()` after tox_iterate returns (ctypes would otherwise
  print and swallow it).
* A `Tox` object is not thread safe: one call at a time, from one thread.
  ctypes releases the GIL around every C call, so the GIL does not protect it.
"""

from __future__ import annotations

import ctypes
import logging
from ctypes import (
    CFUNCTYPE,
    POINTER,
    byref,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Callable

_lib = ctypes.CDLL("libtoxcore.so.2")

_core_log = logging.getLogger("toxbridge.tox.core")

# --------------------------------------------------------------------------- enums

CONNECTION_NONE = 0
CONNECTION_TCP = 1
CONNECTION_UDP = 2

MESSAGE_NORMAL = 0
MESSAGE_ACTION = 1

PROXY_TYPES = {"none": 0, "http": 1, "socks5": 2}

SAVEDATA_NONE = 0
SAVEDATA_TOX_SAVE = 1
SAVEDATA_SECRET_KEY = 2

FILE_KIND_DATA = 0
FILE_KIND_AVATAR = 1

FILE_CONTROL_RESUME = 0
FILE_CONTROL_PAUSE = 1
FILE_CONTROL_CANCEL = 2

# Error enums, in declaration order (tox.h gives no explicit values, so index == value).
_ERRORS: dict[str, tuple[str, ...]] = {
    "OPTIONS_NEW": ("OK", "MALLOC"),
    "NEW": (
        "OK", "NULL", "MALLOC", "PORT_ALLOC", "PROXY_BAD_TYPE", "PROXY_BAD_HOST",
        "PROXY_BAD_PORT", "PROXY_NOT_FOUND", "LOAD_ENCRYPTED", "LOAD_BAD_FORMAT",
    ),
    "BOOTSTRAP": ("OK", "NULL", "BAD_HOST", "BAD_PORT"),
    "SET_INFO": ("OK", "NULL", "TOO_LONG"),
    "FRIEND_ADD": (
        "OK", "NULL", "TOO_LONG", "NO_MESSAGE", "OWN_KEY", "ALREADY_SENT",
        "BAD_CHECKSUM", "SET_NEW_NOSPAM", "MALLOC",
    ),
    "FRIEND_DELETE": ("OK", "FRIEND_NOT_FOUND"),
    "FRIEND_BY_PUBLIC_KEY": ("OK", "NULL", "NOT_FOUND"),
    "FRIEND_GET_PUBLIC_KEY": ("OK", "FRIEND_NOT_FOUND"),
    "FRIEND_QUERY": ("OK", "NULL", "FRIEND_NOT_FOUND"),
    "FRIEND_GET_LAST_ONLINE": ("OK", "FRIEND_NOT_FOUND"),
    "FRIEND_SEND_MESSAGE": (
        "OK", "NULL", "FRIEND_NOT_FOUND", "FRIEND_NOT_CONNECTED", "SENDQ", "TOO_LONG", "EMPTY",
    ),
    "FILE_CONTROL": (
        "OK", "FRIEND_NOT_FOUND", "FRIEND_NOT_CONNECTED", "NOT_FOUND", "NOT_PAUSED",
        "DENIED", "ALREADY_PAUSED", "SENDQ",
    ),
    "FILE_SEEK": (
        "OK", "FRIEND_NOT_FOUND", "FRIEND_NOT_CONNECTED", "NOT_FOUND", "DENIED",
        "INVALID_POSITION", "SENDQ",
    ),
    "FILE_GET": ("OK", "NULL", "FRIEND_NOT_FOUND", "NOT_FOUND"),
    "FILE_SEND": (
        "OK", "NULL", "FRIEND_NOT_FOUND", "FRIEND_NOT_CONNECTED", "NAME_TOO_LONG", "TOO_MANY",
    ),
    "FILE_SEND_CHUNK": (
        "OK", "NULL", "FRIEND_NOT_FOUND", "FRIEND_NOT_CONNECTED", "NOT_FOUND",
        "NOT_TRANSFERRING", "INVALID_LENGTH", "SENDQ", "WRONG_POSITION",
    ),
    "FRIEND_CUSTOM_PACKET": (
        "OK", "NULL", "FRIEND_NOT_FOUND", "FRIEND_NOT_CONNECTED", "INVALID", "EMPTY",
        "TOO_LONG", "SENDQ",
    ),
    "GET_PORT": ("OK", "NOT_BOUND"),
}

# ---------------------------------------------------------------------- exceptions


class ToxError(Exception):
    """A toxcore call failed. str() reads "tox_friend_add: TOX_ERR_FRIEND_ADD_ALREADY_SENT"."""

    def __init__(self, message: str, *, function: str = "", code: int | None = None,
                 code_name: str = "") -> None:
        super().__init__(message)
        self.function = function
        self.code = code
        self.code_name = code_name


class ToxValueError(ToxError, ValueError):
    """Bad argument: NULL, too long, empty, invalid, bad host/port, wrong length."""


class ToxNotFoundError(ToxError, LookupError):
    """Unknown friend, file transfer or public key."""


class ToxFriendNotConnected(ToxError, ConnectionError):
    """The friend is offline, or its send queue is full (retry later)."""


class ToxSendQueueFull(ToxFriendNotConnected):
    """*_SENDQ: the packet queue is full; iterate and retry."""


class ToxStateError(ToxError):
    """The transfer is in the wrong state (NOT_PAUSED, DENIED, NOT_TRANSFERRING, ...)."""


class ToxFriendAddError(ToxError):
    """tox_friend_add refused: OWN_KEY, ALREADY_SENT, BAD_CHECKSUM, SET_NEW_NOSPAM."""


class ToxPortError(ToxError, OSError):
    """TOX_ERR_NEW_PORT_ALLOC or TOX_ERR_GET_PORT_NOT_BOUND."""


class ToxProxyError(ToxError, ValueError):
    """TOX_ERR_NEW_PROXY_*."""


class ToxLoadError(ToxError, ValueError):
    """TOX_ERR_NEW_LOAD_*: savedata is encrypted or malformed."""


class ToxMemoryError(ToxError, MemoryError):
    """toxcore could not allocate memory."""


def _classify(enum: str, name: str) -> type[ToxError]:
    if name == "SENDQ":
        return ToxSendQueueFull
    if name == "FRIEND_NOT_CONNECTED":
        return ToxFriendNotConnected
    if name.endswith("NOT_FOUND") and not name.startswith("PROXY"):
        return ToxNotFoundError
    if name == "MALLOC":
        return ToxMemoryError
    if name in ("PORT_ALLOC", "NOT_BOUND"):
        return ToxPortError
    if name.startswith("PROXY_"):
        return ToxProxyError
    if name.startswith("LOAD_"):
        return ToxLoadError
    if enum == "FRIEND_ADD" and name in ("OWN_KEY", "ALREADY_SENT", "BAD_CHECKSUM", "SET_NEW_NOSPAM"):
        return ToxFriendAddError
    if name in ("NOT_PAUSED", "DENIED", "ALREADY_PAUSED", "NOT_TRANSFERRING", "WRONG_POSITION",
                "TOO_MANY"):
        return ToxStateError
    return ToxValueError


def error_for(function: str, enum: str, code: int) -> ToxError:
    """Build the exception for error `code` of enum Tox_Err_<enum> returned by `function`."""
    names = _ERRORS[enum]
    name = names[code] if 0 <= code < len(names) else f"UNKNOWN_{code}"
    code_name = f"TOX_ERR_{enum}_{name}"
    return _classify(enum, name)(f"{function}: {code_name}", function=function, code=code,
                                 code_name=code_name)


def _check(function: str, enum: str, err: c_int) -> None:
    if err.value != 0:
        raise error_for(function, enum, err.value)


# ------------------------------------------------------------------- declarations

_Tox_p = c_void_p
_Opts_p = c_void_p
_u8p = POINTER(c_uint8)
_errp = POINTER(c_int)


def _decl(name: str, restype, *argtypes, optional: bool = False):
    try:
        fn = getattr(_lib, name)
    except AttributeError:
        if optional:
            return None
        raise
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


for _name in ("version_major", "version_minor", "version_patch", "public_key_size",
              "secret_key_size", "nospam_size", "address_size", "max_name_length",
              "max_status_message_length", "max_friend_request_length", "max_message_length",
              "max_custom_packet_size", "hash_length", "file_id_length",
              "max_filename_length", "max_hostname_length"):
    _decl("tox_" + _name, c_uint32)

_decl("tox_options_new", _Opts_p, _errp)
_decl("tox_options_free", None, _Opts_p)
for _name in ("udp_enabled", "ipv6_enabled", "local_discovery_enabled", "hole_punching_enabled",
              "dht_announcements_enabled", "experimental_thread_safety"):
    _decl("tox_options_set_" + _name, None, _Opts_p, c_bool, optional=True)
    _decl("tox_options_get_" + _name, c_bool, _Opts_p, optional=True)
for _name in ("start_port", "end_port", "tcp_port", "proxy_port"):
    _decl("tox_options_set_" + _name, None, _Opts_p, c_uint16)
    _decl("tox_options_get_" + _name, c_uint16, _Opts_p)
_decl("tox_options_set_proxy_type", None, _Opts_p, c_int)
_decl("tox_options_get_proxy_type", c_int, _Opts_p)
_decl("tox_options_set_proxy_host", None, _Opts_p, c_char_p)
_decl("tox_options_get_proxy_host", c_char_p, _Opts_p)
_decl("tox_options_set_savedata_type", None, _Opts_p, c_int)
_decl("tox_options_get_savedata_type", c_int, _Opts_p)
_decl("tox_options_set_savedata_data", None, _Opts_p, c_char_p, c_size_t)
_decl("tox_options_get_savedata_length", c_size_t, _Opts_p)

LOG_CB = CFUNCTYPE(None, _Tox_p, c_int, c_char_p, c_uint32, c_char_p, c_char_p, c_void_p)
_decl("tox_options_set_log_callback", None, _Opts_p, LOG_CB)

_decl("tox_new", _Tox_p, _Opts_p, _errp)
_decl("tox_kill", None, _Tox_p)
_decl("tox_get_savedata_size", c_size_t, _Tox_p)
_decl("tox_get_savedata", None, _Tox_p, c_char_p)
_decl("tox_bootstrap", c_bool, _Tox_p, c_char_p, c_uint16, c_char_p, _errp)
_decl("tox_add_tcp_relay", c_bool, _Tox_p, c_char_p, c_uint16, c_char_p, _errp)
_decl("tox_self_get_connection_status", c_int, _Tox_p)
_decl("tox_iteration_interval", c_uint32, _Tox_p)
_decl("tox_iterate", None, _Tox_p, c_void_p)
_decl("tox_self_get_address", None, _Tox_p, c_char_p)
_decl("tox_self_get_public_key", None, _Tox_p, c_char_p)
_decl("tox_self_get_dht_id", None, _Tox_p, c_char_p)
_decl("tox_self_get_udp_port", c_uint16, _Tox_p, _errp)
_decl("tox_self_get_tcp_port", c_uint16, _Tox_p, _errp)
_decl("tox_self_get_nospam", c_uint32, _Tox_p)
_decl("tox_self_set_name", c_bool, _Tox_p, c_char_p, c_size_t, _errp)
_decl("tox_self_set_status_message", c_bool, _Tox_p, c_char_p, c_size_t, _errp)
_decl("tox_friend_add", c_uint32, _Tox_p, c_char_p, c_char_p, c_size_t, _errp)
_decl("tox_friend_add_norequest", c_uint32, _Tox_p, c_char_p, _errp)
_decl("tox_friend_delete", c_bool, _Tox_p, c_uint32, _errp)
_decl("tox_friend_by_public_key", c_uint32, _Tox_p, c_char_p, _errp)
_decl("tox_friend_get_public_key", c_bool, _Tox_p, c_uint32, c_char_p, _errp)
_decl("tox_friend_get_connection_status", c_int, _Tox_p, c_uint32, _errp)
_decl("tox_friend_get_last_online", c_uint64, _Tox_p, c_uint32, _errp)
_decl("tox_self_get_friend_list_size", c_size_t, _Tox_p)
_decl("tox_self_get_friend_list", None, _Tox_p, POINTER(c_uint32))
_decl("tox_friend_send_message", c_uint32, _Tox_p, c_uint32, c_int, c_char_p, c_size_t, _errp)
_decl("tox_file_send", c_uint32, _Tox_p, c_uint32, c_uint32, c_uint64, c_char_p, c_char_p,
      c_size_t, _errp)
_decl("tox_file_control", c_bool, _Tox_p, c_uint32, c_uint32, c_int, _errp)
_decl("tox_file_seek", c_bool, _Tox_p, c_uint32, c_uint32, c_uint64, _errp)
_decl("tox_file_get_file_id", c_bool, _Tox_p, c_uint32, c_uint32, c_char_p, _errp)
_decl("tox_file_send_chunk", c_bool, _Tox_p, c_uint32, c_uint32, c_uint64, c_char_p, c_size_t,
      _errp)
_decl("tox_friend_send_lossless_packet", c_bool, _Tox_p, c_uint32, c_char_p, c_size_t, _errp)
_decl("tox_friend_send_lossy_packet", c_bool, _Tox_p, c_uint32, c_char_p, c_size_t, _errp)

# Callback types; data pointers are c_void_p so that we copy them with string_at.
SELF_CONNECTION_STATUS_CB = CFUNCTYPE(None, _Tox_p, c_int, c_void_p)
FRIEND_REQUEST_CB = CFUNCTYPE(None, _Tox_p, c_void_p, c_void_p, c_size_t, c_void_p)
FRIEND_MESSAGE_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_int, c_void_p, c_size_t, c_void_p)
FRIEND_NAME_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_void_p, c_size_t, c_void_p)
FRIEND_CONNECTION_STATUS_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_int, c_void_p)
FRIEND_PACKET_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_void_p, c_size_t, c_void_p)
FILE_RECV_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_uint32, c_uint64, c_void_p, c_size_t,
                         c_void_p)
FILE_RECV_CHUNK_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_uint64, c_void_p, c_size_t,
                               c_void_p)
FILE_CHUNK_REQUEST_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_uint64, c_size_t, c_void_p)
FILE_RECV_CONTROL_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_int, c_void_p)

_CALLBACKS = {
    # event name: (registration function, ctypes type)
    "self_connection_status": ("tox_callback_self_connection_status", SELF_CONNECTION_STATUS_CB),
    "friend_request": ("tox_callback_friend_request", FRIEND_REQUEST_CB),
    "friend_message": ("tox_callback_friend_message", FRIEND_MESSAGE_CB),
    "friend_name": ("tox_callback_friend_name", FRIEND_NAME_CB),
    "friend_connection_status": ("tox_callback_friend_connection_status",
                                 FRIEND_CONNECTION_STATUS_CB),
    "friend_lossless_packet": ("tox_callback_friend_lossless_packet", FRIEND_PACKET_CB),
    "friend_lossy_packet": ("tox_callback_friend_lossy_packet", FRIEND_PACKET_CB),
    "file_recv": ("tox_callback_file_recv", FILE_RECV_CB),
    "file_recv_chunk": ("tox_callback_file_recv_chunk", FILE_RECV_CHUNK_CB),
    "file_chunk_request": ("tox_callback_file_chunk_request", FILE_CHUNK_REQUEST_CB),
    "file_recv_control": ("tox_callback_file_recv_control", FILE_RECV_CONTROL_CB),
}
for _reg, _cbtype in _CALLBACKS.values():
    _decl(_reg, None, _Tox_p, _cbtype)

# ----------------------------------------------------------------------- constants


def version() -> tuple[int, int, int]:
    return (_lib.tox_version_major(), _lib.tox_version_minor(), _lib.tox_version_patch())


PUBLIC_KEY_SIZE: int = _lib.tox_public_key_size()
SECRET_KEY_SIZE: int = _lib.tox_secret_key_size()
ADDRESS_SIZE: int = _lib.tox_address_size()
FILE_ID_LENGTH: int = _lib.tox_file_id_length()
HASH_LENGTH: int = _lib.tox_hash_length()
MAX_NAME_LENGTH: int = _lib.tox_max_name_length()
MAX_STATUS_MESSAGE_LENGTH: int = _lib.tox_max_status_message_length()
MAX_FRIEND_REQUEST_LENGTH: int = _lib.tox_max_friend_request_length()
MAX_MESSAGE_LENGTH: int = _lib.tox_max_message_length()
MAX_CUSTOM_PACKET_SIZE: int = _lib.tox_max_custom_packet_size()
MAX_FILENAME_LENGTH: int = _lib.tox_max_filename_length()
MAX_HOSTNAME_LENGTH: int = _lib.tox_max_hostname_length()
# Not exported by the library: the chunk length toxcore asks for in file_chunk_request
# (MAX_FILE_DATA_SIZE in Messenger.h, 1371 bytes; measured, see FACTS.md).
FILE_CHUNK_SIZE = 1371
LOSSLESS_PACKET_FIRST_BYTES = range(160, 192)
LOSSY_PACKET_FIRST_BYTES = range(200, 255)

HAS_DHT_ANNOUNCEMENTS = hasattr(_lib, "tox_options_set_dht_announcements_enabled")

# ------------------------------------------------------------------------ helpers

_LOG_LEVELS = {0: 5, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


def _on_core_log(_tox, level, file, line, func, message, _user):
    pylevel = _LOG_LEVELS.get(level, logging.ERROR)
    if _core_log.isEnabledFor(pylevel):
        _core_log.log(pylevel, "%s:%d %s: %s", (file or b"").decode(errors="replace"), line,
                      (func or b"").decode(errors="replace"),
                      (message or b"").decode(errors="replace"))


_log_cb = LOG_CB(_on_core_log)  # module level: lives as long as the library


def _bytes(value: bytes, size: int, what: str, function: str) -> bytes:
    value = bytes(value)
    if len(value) != size:
        raise ToxValueError(f"{function}: {what} must be {size} bytes, got {len(value)}",
                            function=function)
    return value


def _host(host: str, function: str) -> bytes:
    raw = host.encode("ascii") if isinstance(host, str) else bytes(host)
    if not raw or len(raw) > MAX_HOSTNAME_LENGTH or b"\0" in raw:
        raise ToxValueError(f"{function}: bad host {host!r}", function=function)
    return raw


class Options:
    """Owns one Tox_Options allocated by tox_options_new (freed on close or GC).

    The library stores pointers for proxy_host and savedata, so this object keeps
    those buffers alive until it is freed.
    """

    def __init__(self) -> None:
        err = c_int(0)
        ptr = _lib.tox_options_new(byref(err))
        _check("tox_options_new", "OPTIONS_NEW", err)
        self._ptr = ptr
        self._keep: dict[str, object] = {}
        _lib.tox_options_set_log_callback(ptr, _log_cb)

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise ValueError("Tox_Options already freed")
        return self._ptr

    def set(self, name: str, value) -> None:
        """Call tox_options_set_<name>(value). Unknown names raise AttributeError."""
        fn = getattr(_lib, "tox_options_set_" + name, None)
        if fn is None:
            raise AttributeError(f"libtoxcore has no tox_options_set_{name}")
        if name == "proxy_host":
            buf = value.encode("ascii") if isinstance(value, str) else bytes(value)
            self._keep[name] = buf = ctypes.create_string_buffer(buf)
            fn(self.ptr, ctypes.cast(buf, c_char_p))
        else:
            fn(self.ptr, value)

    def get(self, name: str):
        fn = getattr(_lib, "tox_options_get_" + name, None)
        if fn is None:
            raise AttributeError(f"libtoxcore has no tox_options_get_{name}")
        return fn(self.ptr)

    def has(self, name: str) -> bool:
        return getattr(_lib, "tox_options_set_" + name, None) is not None

    def set_savedata(self, kind: int, data: bytes) -> None:
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        self._keep["savedata"] = buf
        _lib.tox_options_set_savedata_type(self.ptr, kind)
        _lib.tox_options_set_savedata_data(self.ptr, ctypes.cast(buf, c_char_p), len(data))

    def close(self) -> None:
        if self._ptr is not None:
            _lib.tox_options_free(self._ptr)
            self._ptr = None
            self._keep.clear()

    __del__ = close


# ------------------------------------------------------------------------- Tox


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
    """

    def __init__(self, options: Options, sink: EventSink) -> None:
        err = c_int(0)
        ptr = _lib.tox_new(options.ptr, byref(err))
        _check("tox_new", "NEW", err)
        if not ptr:
            raise ToxError("tox_new: returned NULL", function="tox_new")
        self._ptr = ptr
        self._sink = sink
        self._pending: list[BaseException] = []
        self._cbs: list[object] = []   # keeps every ctypes callback object alive
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
            _lib.tox_kill(ptr)

    def savedata(self) -> bytes:
        size = _lib.tox_get_savedata_size(self.ptr)
        buf = ctypes.create_string_buffer(size)
        _lib.tox_get_savedata(self.ptr, buf)
        return buf.raw[:size]

    # -- event loop

    def iteration_interval(self) -> int:
        return _lib.tox_iteration_interval(self.ptr)

    def iterate(self) -> None:
        """Run tox_iterate; re-raise the first exception a callback raised (others are chained)."""
        _lib.tox_iterate(self.ptr, None)
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
                "friend_request", s(pk, PUBLIC_KEY_SIZE), s(msg, n) if n else b""),
            "friend_message": lambda t, f, kind, msg, n, u: sink(
                "friend_message", f, kind, s(msg, n) if n else b""),
            "friend_name": lambda t, f, name, n, u: sink(
                "friend_name", f, s(name, n) if n else b""),
            "friend_connection_status": lambda t, f, st, u: sink("friend_connection_status", f, st),
            "friend_lossless_packet": lambda t, f, d, n, u: sink(
                "friend_lossless_packet", f, s(d, n) if n else b""),
            "friend_lossy_packet": lambda t, f, d, n, u: sink(
                "friend_lossy_packet", f, s(d, n) if n else b""),
            "file_recv": lambda t, f, fn, kind, size, name, n, u: sink(
                "file_recv", f, fn, kind, size, s(name, n) if n else b""),
            "file_recv_chunk": lambda t, f, fn, pos, d, n, u: sink(
                "file_recv_chunk", f, fn, pos, s(d, n) if n else b""),
            "file_chunk_request": lambda t, f, fn, pos, n, u: sink(
                "file_chunk_request", f, fn, pos, n),
            "file_recv_control": lambda t, f, fn, ctl, u: sink("file_recv_control", f, fn, ctl),
        }
        for event, (reg, cbtype) in _CALLBACKS.items():
            cb = cbtype(guard(handlers[event]))
            self._cbs.append(cb)
            getattr(_lib, reg)(self._ptr, cb)

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
            raise ToxValueError(f"{function}: TOX_ERR_BOOTSTRAP_BAD_PORT ({port})",
                                function=function, code=3, code_name="TOX_ERR_BOOTSTRAP_BAD_PORT")
        err = c_int(0)
        getattr(_lib, function)(self.ptr, raw, port, key, byref(err))
        _check(function, "BOOTSTRAP", err)

    def self_connection_status(self) -> int:
        return _lib.tox_self_get_connection_status(self.ptr)

    # -- identity

    def address(self) -> bytes:
        buf = ctypes.create_string_buffer(ADDRESS_SIZE)
        _lib.tox_self_get_address(self.ptr, buf)
        return buf.raw

    def public_key(self) -> bytes:
        buf = ctypes.create_string_buffer(PUBLIC_KEY_SIZE)
        _lib.tox_self_get_public_key(self.ptr, buf)
        return buf.raw

    def dht_id(self) -> bytes:
        buf = ctypes.create_string_buffer(PUBLIC_KEY_SIZE)
        _lib.tox_self_get_dht_id(self.ptr, buf)
        return buf.raw

    def udp_port(self) -> int:
        err = c_int(0)
        port = _lib.tox_self_get_udp_port(self.ptr, byref(err))
        _check("tox_self_get_udp_port", "GET_PORT", err)
        return port

    def tcp_port(self) -> int:
        err = c_int(0)
        port = _lib.tox_self_get_tcp_port(self.ptr, byref(err))
        _check("tox_self_get_tcp_port", "GET_PORT", err)
        return port

    def set_name(self, name: bytes) -> None:
        err = c_int(0)
        _lib.tox_self_set_name(self.ptr, name, len(name), byref(err))
        _check("tox_self_set_name", "SET_INFO", err)

    def set_status_message(self, text: bytes) -> None:
        err = c_int(0)
        _lib.tox_self_set_status_message(self.ptr, text, len(text), byref(err))
        _check("tox_self_set_status_message", "SET_INFO", err)

    # -- friends

    def friend_add(self, address: bytes, message: bytes) -> int:
        address = _bytes(address, ADDRESS_SIZE, "address", "tox_friend_add")
        message = bytes(message)
        err = c_int(0)
        n = _lib.tox_friend_add(self.ptr, address, message, len(message), byref(err))
        _check("tox_friend_add", "FRIEND_ADD", err)
        return n

    def friend_add_norequest(self, public_key: bytes) -> int:
        key = _bytes(public_key, PUBLIC_KEY_SIZE, "public key", "tox_friend_add_norequest")
        err = c_int(0)
        n = _lib.tox_friend_add_norequest(self.ptr, key, byref(err))
        _check("tox_friend_add_norequest", "FRIEND_ADD", err)
        return n

    def friend_delete(self, friend: int) -> None:
        err = c_int(0)
        _lib.tox_friend_delete(self.ptr, friend, byref(err))
        _check("tox_friend_delete", "FRIEND_DELETE", err)

    def friend_by_public_key(self, public_key: bytes) -> int:
        key = _bytes(public_key, PUBLIC_KEY_SIZE, "public key", "tox_friend_by_public_key")
        err = c_int(0)
        n = _lib.tox_friend_by_public_key(self.ptr, key, byref(err))
        _check("tox_friend_by_public_key", "FRIEND_BY_PUBLIC_KEY", err)
        return n

    def friend_public_key(self, friend: int) -> bytes:
        buf = ctypes.create_string_buffer(PUBLIC_KEY_SIZE)
        err = c_int(0)
        _lib.tox_friend_get_public_key(self.ptr, friend, buf, byref(err))
        _check("tox_friend_get_public_key", "FRIEND_GET_PUBLIC_KEY", err)
        return buf.raw

    def friend_connection_status(self, friend: int) -> int:
        err = c_int(0)
        status = _lib.tox_friend_get_connection_status(self.ptr, friend, byref(err))
        _check("tox_friend_get_connection_status", "FRIEND_QUERY", err)
        return status

    def friend_last_online(self, friend: int) -> int:
        """Unix time the friend was last seen online (kept in savedata); UINT64_MAX if never."""
        err = c_int(0)
        when = _lib.tox_friend_get_last_online(self.ptr, friend, byref(err))
        _check("tox_friend_get_last_online", "FRIEND_GET_LAST_ONLINE", err)
        return when

    def friend_list(self) -> list[int]:
        # size and list come from two calls; fine because we are the only caller.
        size = _lib.tox_self_get_friend_list_size(self.ptr)
        arr = (c_uint32 * max(size, 1))()
        _lib.tox_self_get_friend_list(self.ptr, arr)
        return list(arr[:size])

    def send_message(self, friend: int, text: bytes, kind: int = MESSAGE_NORMAL) -> int:
        text = bytes(text)
        err = c_int(0)
        n = _lib.tox_friend_send_message(self.ptr, friend, kind, text, len(text), byref(err))
        _check("tox_friend_send_message", "FRIEND_SEND_MESSAGE", err)
        return n

    def send_lossless_packet(self, friend: int, data: bytes) -> None:
        self._custom("tox_friend_send_lossless_packet", friend, data)

    def send_lossy_packet(self, friend: int, data: bytes) -> None:
        self._custom("tox_friend_send_lossy_packet", friend, data)

    def _custom(self, function: str, friend: int, data: bytes) -> None:
        data = bytes(data)
        err = c_int(0)
        getattr(_lib, function)(self.ptr, friend, data, len(data), byref(err))
        _check(function, "FRIEND_CUSTOM_PACKET", err)

    # -- files

    def file_send(self, friend: int, kind: int, size: int, file_id: bytes | None,
                  filename: bytes) -> int:
        fid = None if file_id is None else _bytes(file_id, FILE_ID_LENGTH, "file_id",
                                                  "tox_file_send")
        filename = bytes(filename)
        err = c_int(0)
        n = _lib.tox_file_send(self.ptr, friend, kind, size, fid, filename, len(filename),
                               byref(err))
        _check("tox_file_send", "FILE_SEND", err)
        return n

    def file_control(self, friend: int, file_number: int, control: int) -> None:
        err = c_int(0)
        _lib.tox_file_control(self.ptr, friend, file_number, control, byref(err))
        _check("tox_file_control", "FILE_CONTROL", err)

    def file_seek(self, friend: int, file_number: int, position: int) -> None:
        err = c_int(0)
        _lib.tox_file_seek(self.ptr, friend, file_number, position, byref(err))
        _check("tox_file_seek", "FILE_SEEK", err)

    def file_id(self, friend: int, file_number: int) -> bytes:
        buf = ctypes.create_string_buffer(FILE_ID_LENGTH)
        err = c_int(0)
        _lib.tox_file_get_file_id(self.ptr, friend, file_number, buf, byref(err))
        _check("tox_file_get_file_id", "FILE_GET", err)
        return buf.raw

    def file_send_chunk(self, friend: int, file_number: int, position: int, data: bytes) -> None:
        data = bytes(data)
        err = c_int(0)
        _lib.tox_file_send_chunk(self.ptr, friend, file_number, position, data, len(data),
                                 byref(err))
        _check("tox_file_send_chunk", "FILE_SEND_CHUNK", err)
