"""The settings a Tox instance starts with: ToxOptions (ours, frozen) made into a Tox_Options
(toxcore's, through tox_options_new and its setters only), with toxcore's log sent to Python's."""

from __future__ import annotations

import ctypes
import logging
from ctypes import byref, c_char_p, c_int
from dataclasses import dataclass

from .errors import ToxValueError, check
from .library import LOG_CB, PROXY_TYPES, SAVEDATA_TOX_SAVE, lib

_core_log = logging.getLogger("toxbridge.tox.core")


@dataclass(frozen=True)
class ToxOptions:
    udp: bool = True
    ipv6: bool = False
    local_discovery: bool = False  # LAN discovery broadcasts to 255.255.255.255
    start_port: int = 0  # 0,0 = let toxcore choose (33445..33545)
    end_port: int = 0
    tcp_port: int = 0  # >0: also run a TCP relay server
    proxy_type: str = "none"  # "none" | "http" | "socks5"
    proxy_host: str = ""
    proxy_port: int = 0
    hole_punching: bool = False


_LOG_LEVELS = {0: 5, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


def _on_core_log(_tox, level, file, line, func, message, _user):
    pylevel = _LOG_LEVELS.get(level, logging.ERROR)
    if _core_log.isEnabledFor(pylevel):
        _core_log.log(
            pylevel,
            "%s:%d %s: %s",
            (file or b"").decode(errors="replace"),
            line,
            (func or b"").decode(errors="replace"),
            (message or b"").decode(errors="replace"),
        )


_log_cb = LOG_CB(_on_core_log)  # module level: lives as long as the library


class Options:
    """Owns one Tox_Options allocated by tox_options_new (freed on close or GC).

    The library stores pointers for proxy_host and savedata, so this object keeps
    those buffers alive until it is freed.
    """

    def __init__(self) -> None:
        err = c_int(0)
        ptr = lib.tox_options_new(byref(err))
        check("tox_options_new", "OPTIONS_NEW", err)
        self._ptr = ptr
        self._keep: dict[str, object] = {}
        lib.tox_options_set_log_callback(ptr, _log_cb)

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise ValueError("Tox_Options already freed")
        return self._ptr

    def set(self, name: str, value) -> None:
        """Call tox_options_set_<name>(value). Unknown names raise AttributeError."""
        fn = getattr(lib, "tox_options_set_" + name, None)
        if fn is None:
            raise AttributeError(f"libtoxcore has no tox_options_set_{name}")
        if name == "proxy_host":
            host = value.encode("ascii") if isinstance(value, str) else bytes(value)
            self._keep[name] = buf = ctypes.create_string_buffer(host)
            fn(self.ptr, ctypes.cast(buf, c_char_p))
        else:
            fn(self.ptr, value)

    def get(self, name: str):
        fn = getattr(lib, "tox_options_get_" + name, None)
        if fn is None:
            raise AttributeError(f"libtoxcore has no tox_options_get_{name}")
        return fn(self.ptr)

    def has(self, name: str) -> bool:
        return getattr(lib, "tox_options_set_" + name, None) is not None

    def set_savedata(self, kind: int, data: bytes) -> None:
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        self._keep["savedata"] = buf
        lib.tox_options_set_savedata_type(self.ptr, kind)
        lib.tox_options_set_savedata_data(self.ptr, ctypes.cast(buf, c_char_p), len(data))

    def close(self) -> None:
        if self._ptr is not None:
            lib.tox_options_free(self._ptr)
            self._ptr = None
            self._keep.clear()

    __del__ = close


def build(options: ToxOptions, savedata: bytes | None) -> Options:
    """A Tox_Options for tox_new; the caller closes it (tox_new copies what it needs)."""
    if options.proxy_type not in PROXY_TYPES:
        raise ToxValueError(f"proxy_type must be one of {sorted(PROXY_TYPES)}, got {options.proxy_type!r}")
    for field in ("start_port", "end_port", "tcp_port", "proxy_port"):
        value = getattr(options, field)
        if not 0 <= value <= 0xFFFF:
            raise ToxValueError(f"{field} must be 0..65535, got {value}")
    opts = Options()
    try:
        opts.set("udp_enabled", options.udp)
        opts.set("ipv6_enabled", options.ipv6)
        opts.set("local_discovery_enabled", options.local_discovery)
        opts.set("hole_punching_enabled", options.hole_punching)
        opts.set("start_port", options.start_port)
        opts.set("end_port", options.end_port)
        opts.set("tcp_port", options.tcp_port)
        opts.set("proxy_type", PROXY_TYPES[options.proxy_type])
        if options.proxy_type != "none":
            opts.set("proxy_host", options.proxy_host)
            opts.set("proxy_port", options.proxy_port)
        if savedata:
            opts.set_savedata(SAVEDATA_TOX_SAVE, savedata)
    except BaseException:
        opts.close()
        raise
    return opts
