"""toxcore's error codes as one exception hierarchy (whose classes also inherit the built-in ones)."""

from __future__ import annotations

from ctypes import c_int

# Error enums, in declaration order (tox.h gives no explicit values, so index == value).
_ERRORS: dict[str, tuple[str, ...]] = {
    "OPTIONS_NEW": ("OK", "MALLOC"),
    "NEW": (
        "OK",
        "NULL",
        "MALLOC",
        "PORT_ALLOC",
        "PROXY_BAD_TYPE",
        "PROXY_BAD_HOST",
        "PROXY_BAD_PORT",
        "PROXY_NOT_FOUND",
        "LOAD_ENCRYPTED",
        "LOAD_BAD_FORMAT",
    ),
    "BOOTSTRAP": ("OK", "NULL", "BAD_HOST", "BAD_PORT"),
    "SET_INFO": ("OK", "NULL", "TOO_LONG"),
    "FRIEND_ADD": (
        "OK",
        "NULL",
        "TOO_LONG",
        "NO_MESSAGE",
        "OWN_KEY",
        "ALREADY_SENT",
        "BAD_CHECKSUM",
        "SET_NEW_NOSPAM",
        "MALLOC",
    ),
    "FRIEND_DELETE": ("OK", "FRIEND_NOT_FOUND"),
    "FRIEND_BY_PUBLIC_KEY": ("OK", "NULL", "NOT_FOUND"),
    "FRIEND_GET_PUBLIC_KEY": ("OK", "FRIEND_NOT_FOUND"),
    "FRIEND_QUERY": ("OK", "NULL", "FRIEND_NOT_FOUND"),
    "FRIEND_GET_LAST_ONLINE": ("OK", "FRIEND_NOT_FOUND"),
    "FRIEND_SEND_MESSAGE": (
        "OK",
        "NULL",
        "FRIEND_NOT_FOUND",
        "FRIEND_NOT_CONNECTED",
        "SENDQ",
        "TOO_LONG",
        "EMPTY",
    ),
    "FILE_CONTROL": (
        "OK",
        "FRIEND_NOT_FOUND",
        "FRIEND_NOT_CONNECTED",
        "NOT_FOUND",
        "NOT_PAUSED",
        "DENIED",
        "ALREADY_PAUSED",
        "SENDQ",
    ),
    "FILE_SEEK": (
        "OK",
        "FRIEND_NOT_FOUND",
        "FRIEND_NOT_CONNECTED",
        "NOT_FOUND",
        "DENIED",
        "INVALID_POSITION",
        "SENDQ",
    ),
    "FILE_GET": ("OK", "NULL", "FRIEND_NOT_FOUND", "NOT_FOUND"),
    "FILE_SEND": (
        "OK",
        "NULL",
        "FRIEND_NOT_FOUND",
        "FRIEND_NOT_CONNECTED",
        "NAME_TOO_LONG",
        "TOO_MANY",
    ),
    "FILE_SEND_CHUNK": (
        "OK",
        "NULL",
        "FRIEND_NOT_FOUND",
        "FRIEND_NOT_CONNECTED",
        "NOT_FOUND",
        "NOT_TRANSFERRING",
        "INVALID_LENGTH",
        "SENDQ",
        "WRONG_POSITION",
    ),
    "FRIEND_CUSTOM_PACKET": (
        "OK",
        "NULL",
        "FRIEND_NOT_FOUND",
        "FRIEND_NOT_CONNECTED",
        "INVALID",
        "EMPTY",
        "TOO_LONG",
        "SENDQ",
    ),
    "GET_PORT": ("OK", "NOT_BOUND"),
}


class ToxError(Exception):
    """A toxcore call failed. str() reads "tox_friend_add: TOX_ERR_FRIEND_ADD_ALREADY_SENT"."""

    def __init__(
        self, message: str, *, function: str = "", code: int | None = None, code_name: str = ""
    ) -> None:
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
    if name in ("NOT_PAUSED", "DENIED", "ALREADY_PAUSED", "NOT_TRANSFERRING", "WRONG_POSITION", "TOO_MANY"):
        return ToxStateError
    return ToxValueError


def error_for(function: str, enum: str, code: int) -> ToxError:
    """Build the exception for error `code` of enum Tox_Err_<enum> returned by `function`."""
    names = _ERRORS[enum]
    name = names[code] if 0 <= code < len(names) else f"UNKNOWN_{code}"
    code_name = f"TOX_ERR_{enum}_{name}"
    return _classify(enum, name)(
        f"{function}: {code_name}", function=function, code=code, code_name=code_name
    )


def check(function: str, enum: str, err: c_int) -> None:
    """Raise the exception for a toxcore call's error out-parameter, unless it says OK."""
    if err.value != 0:
        raise error_for(function, enum, err.value)
