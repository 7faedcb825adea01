"""bench/savedata.py: the path nodes in a Tox savedata, and the errors for what is not one."""

from __future__ import annotations

import struct

import pytest

from bench.savedata import PATH_NODE_SECTION, PathNode, path_nodes, sections


def section(kind: int, data: bytes) -> bytes:
    return struct.pack("<IHH", len(data), kind, 0x01CE) + data


def savedata(*parts: bytes) -> bytes:
    return struct.pack("<II", 0, 0x15ED1B1F) + b"".join(parts) + section(255, b"")


def packed(family: int, address: bytes, port: int, key: bytes) -> bytes:
    return bytes([family]) + address + struct.pack(">H", port) + key


def test_path_nodes_come_out_in_order_with_address_port_key_and_transport():
    udp = packed(2, bytes([203, 0, 113, 101]), 33445, b"\x01" * 32)
    tcp = packed(130, bytes([203, 0, 113, 1]), 443, b"\x02" * 32)
    data = savedata(section(1, b"keys"), section(PATH_NODE_SECTION, udp + tcp))
    assert path_nodes(data) == [
        PathNode("203.0.113.101", 33445, b"\x01" * 32, tcp=False),
        PathNode("203.0.113.1", 443, b"\x02" * 32, tcp=True),
    ]
    assert sections(data)[1] == b"keys"


def test_a_savedata_without_path_nodes_has_none():
    assert path_nodes(savedata(section(1, b"keys"))) == []


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00" * 8, "no global cookie"),
        (struct.pack("<II", 0, 0x15ED1B1F) + struct.pack("<IHH", 4, 1, 0xBEEF) + b"abcd", "cookie 0xbeef"),
        (struct.pack("<II", 0, 0x15ED1B1F) + struct.pack("<IHH", 99, 1, 0x01CE) + b"abcd", "past the end"),
        (struct.pack("<II", 0, 0x15ED1B1F) + b"\x01\x00", "cut in a section header"),
        (savedata(section(PATH_NODE_SECTION, b"\x07" + b"\x00" * 38)), "unknown family 7"),
        (
            savedata(section(PATH_NODE_SECTION, packed(2, b"\x01\x02\x03\x04", 1, b"\x03" * 31))),
            "past the end",
        ),
    ],
)
def test_what_is_not_a_savedata_is_refused_with_what_is_wrong(data, error):
    with pytest.raises(ValueError, match=error):
        path_nodes(data)
