"""libtoxcore.so.2 (Debian's c-toxcore 0.2.18) loaded, its functions declared, its constants read.

Rules the binding follows (see /work/shared/FACTS.md):

* Tox_Options is only touched through tox_options_new/free and the setters,
  never through a struct layout (options.py).
* Constants are read through their getter functions (below).
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
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)

lib = ctypes.CDLL("libtoxcore.so.2")

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


# ------------------------------------------------------------------- declarations

_Tox_p = c_void_p
_Opts_p = c_void_p
_errp = POINTER(c_int)


def _decl(name: str, restype, *argtypes, optional: bool = False):
    try:
        fn = getattr(lib, name)
    except AttributeError:
        if optional:
            return None
        raise
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


for _name in (
    "version_major",
    "version_minor",
    "version_patch",
    "public_key_size",
    "secret_key_size",
    "nospam_size",
    "address_size",
    "max_name_length",
    "max_status_message_length",
    "max_friend_request_length",
    "max_message_length",
    "max_custom_packet_size",
    "hash_length",
    "file_id_length",
    "max_filename_length",
    "max_hostname_length",
):
    _decl("tox_" + _name, c_uint32)

_decl("tox_options_new", _Opts_p, _errp)
_decl("tox_options_free", None, _Opts_p)
for _name in (
    "udp_enabled",
    "ipv6_enabled",
    "local_discovery_enabled",
    "hole_punching_enabled",
    "dht_announcements_enabled",
    "experimental_thread_safety",
):
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
_decl("tox_file_send", c_uint32, _Tox_p, c_uint32, c_uint32, c_uint64, c_char_p, c_char_p, c_size_t, _errp)
_decl("tox_file_control", c_bool, _Tox_p, c_uint32, c_uint32, c_int, _errp)
_decl("tox_file_seek", c_bool, _Tox_p, c_uint32, c_uint32, c_uint64, _errp)
_decl("tox_file_get_file_id", c_bool, _Tox_p, c_uint32, c_uint32, c_char_p, _errp)
_decl("tox_file_send_chunk", c_bool, _Tox_p, c_uint32, c_uint32, c_uint64, c_char_p, c_size_t, _errp)
_decl("tox_friend_send_lossless_packet", c_bool, _Tox_p, c_uint32, c_char_p, c_size_t, _errp)
_decl("tox_friend_send_lossy_packet", c_bool, _Tox_p, c_uint32, c_char_p, c_size_t, _errp)

# Callback types; data pointers are c_void_p so that we copy them with string_at.
SELF_CONNECTION_STATUS_CB = CFUNCTYPE(None, _Tox_p, c_int, c_void_p)
FRIEND_REQUEST_CB = CFUNCTYPE(None, _Tox_p, c_void_p, c_void_p, c_size_t, c_void_p)
FRIEND_MESSAGE_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_int, c_void_p, c_size_t, c_void_p)
FRIEND_NAME_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_void_p, c_size_t, c_void_p)
FRIEND_CONNECTION_STATUS_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_int, c_void_p)
FRIEND_PACKET_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_void_p, c_size_t, c_void_p)
FILE_RECV_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_uint32, c_uint64, c_void_p, c_size_t, c_void_p)
FILE_RECV_CHUNK_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_uint64, c_void_p, c_size_t, c_void_p)
FILE_CHUNK_REQUEST_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_uint64, c_size_t, c_void_p)
FILE_RECV_CONTROL_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_int, c_void_p)
FRIEND_READ_RECEIPT_CB = CFUNCTYPE(None, _Tox_p, c_uint32, c_uint32, c_void_p)

CALLBACKS = {
    # event name: (registration function, ctypes type)
    "self_connection_status": ("tox_callback_self_connection_status", SELF_CONNECTION_STATUS_CB),
    "friend_request": ("tox_callback_friend_request", FRIEND_REQUEST_CB),
    "friend_message": ("tox_callback_friend_message", FRIEND_MESSAGE_CB),
    "friend_name": ("tox_callback_friend_name", FRIEND_NAME_CB),
    "friend_connection_status": ("tox_callback_friend_connection_status", FRIEND_CONNECTION_STATUS_CB),
    "friend_lossless_packet": ("tox_callback_friend_lossless_packet", FRIEND_PACKET_CB),
    "friend_lossy_packet": ("tox_callback_friend_lossy_packet", FRIEND_PACKET_CB),
    "file_recv": ("tox_callback_file_recv", FILE_RECV_CB),
    "file_recv_chunk": ("tox_callback_file_recv_chunk", FILE_RECV_CHUNK_CB),
    "file_chunk_request": ("tox_callback_file_chunk_request", FILE_CHUNK_REQUEST_CB),
    "file_recv_control": ("tox_callback_file_recv_control", FILE_RECV_CONTROL_CB),
    "friend_read_receipt": ("tox_callback_friend_read_receipt", FRIEND_READ_RECEIPT_CB),
}
for _reg, _cbtype in CALLBACKS.values():
    _decl(_reg, None, _Tox_p, _cbtype)


# ----------------------------------------------------------------------- constants


def version() -> tuple[int, int, int]:
    return (lib.tox_version_major(), lib.tox_version_minor(), lib.tox_version_patch())


PUBLIC_KEY_SIZE: int = lib.tox_public_key_size()
SECRET_KEY_SIZE: int = lib.tox_secret_key_size()
ADDRESS_SIZE: int = lib.tox_address_size()
FILE_ID_LENGTH: int = lib.tox_file_id_length()
HASH_LENGTH: int = lib.tox_hash_length()
MAX_NAME_LENGTH: int = lib.tox_max_name_length()
MAX_STATUS_MESSAGE_LENGTH: int = lib.tox_max_status_message_length()
MAX_FRIEND_REQUEST_LENGTH: int = lib.tox_max_friend_request_length()
MAX_MESSAGE_LENGTH: int = lib.tox_max_message_length()
MAX_CUSTOM_PACKET_SIZE: int = lib.tox_max_custom_packet_size()
MAX_FILENAME_LENGTH: int = lib.tox_max_filename_length()
MAX_HOSTNAME_LENGTH: int = lib.tox_max_hostname_length()
# Not exported by the library: the chunk length toxcore asks for in file_chunk_request
# (MAX_FILE_DATA_SIZE in Messenger.h, 1371 bytes; measured, see FACTS.md).
FILE_CHUNK_SIZE = 1371
LOSSLESS_PACKET_FIRST_BYTES = range(160, 192)
LOSSY_PACKET_FIRST_BYTES = range(200, 255)

HAS_DHT_ANNOUNCEMENTS = hasattr(lib, "tox_options_set_dht_announcements_enabled")
