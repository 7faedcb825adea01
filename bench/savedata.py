"""What a Tox node's savedata says about its onion: the path nodes it would save.

toxcore (Messenger.c, state.c) saves its state as a header (u32 0, u32 cookie 0x15ed1b1f, little
endian) and then sections of u32 length, u16 type, u16 cookie 0x01ce (little endian), each
followed by its bytes. Section 11 holds the last NUM_SAVED_PATH_NODES (8) nodes added to the
onion's ring of path nodes (onion_client.c `onion_backup_nodes`: newest first), then the
bootstrap path nodes, packed as the DHT packs nodes: a family byte (2 IPv4 UDP, 10 IPv6 UDP,
130 IPv4 TCP, 138 IPv6 TCP), the address (4 or 16 bytes), the port (big endian) and the
node's 32-byte DHT key. The bench reads it to see how many of those keys are dead; nothing in
the bridge needs it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

GLOBAL_COOKIE = 0x15ED1B1F
SECTION_COOKIE = 0x01CE
PATH_NODE_SECTION = 11
END_SECTION = 255
KEY_SIZE = 32
ADDRESS_SIZES = {2: 4, 10: 16, 130: 4, 138: 16}  # family byte → address length
TCP_FAMILIES = {130, 138}


@dataclass(frozen=True)
class PathNode:
    host: str
    port: int
    public_key: bytes  # the node's DHT key
    tcp: bool


def sections(savedata: bytes) -> dict[int, bytes]:
    """The savedata's sections by type (the last of a type wins, as toxcore's loader reads them)."""
    if len(savedata) < 8 or struct.unpack_from("<II", savedata) != (0, GLOBAL_COOKIE):
        raise ValueError("not a Tox savedata: no global cookie")
    found: dict[int, bytes] = {}
    at = 8
    while at < len(savedata):
        if at + 8 > len(savedata):
            raise ValueError(f"savedata cut in a section header at byte {at}")
        length, kind, cookie = struct.unpack_from("<IHH", savedata, at)
        if cookie != SECTION_COOKIE:
            raise ValueError(
                f"savedata section at byte {at} has cookie {cookie:#06x}, not {SECTION_COOKIE:#06x}"
            )
        at += 8
        if at + length > len(savedata):
            raise ValueError(f"savedata section {kind} at byte {at} runs past the end")
        found[kind] = savedata[at : at + length]
        at += length
        if kind == END_SECTION:
            break
    return found


def unpack_nodes(data: bytes) -> list[PathNode]:
    nodes = []
    at = 0
    while at < len(data):
        family = data[at]
        size = ADDRESS_SIZES.get(family)
        if size is None:
            raise ValueError(f"packed node at byte {at} has unknown family {family}")
        end = at + 1 + size + 2 + KEY_SIZE
        if end > len(data):
            raise ValueError(f"packed node at byte {at} runs past the end")
        address = ipaddress.ip_address(data[at + 1 : at + 1 + size])
        (port,) = struct.unpack_from(">H", data, at + 1 + size)
        key = data[at + 1 + size + 2 : end]
        nodes.append(PathNode(str(address), port, key, family in TCP_FAMILIES))
        at = end
    return nodes


def path_nodes(savedata: bytes) -> list[PathNode]:
    """The onion path nodes the savedata holds (none if it has no such section)."""
    return unpack_nodes(sections(savedata).get(PATH_NODE_SECTION, b""))
