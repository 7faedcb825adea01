"""Whole payloads in one buffer, for tests: the wire format's encoder and parser joined up (the
bridge itself never holds a payload whole: wire.payload_of gives pieces, wire.PayloadParser is
fed them)."""

from __future__ import annotations

import json
import zlib

from toxbridge.tox import wire


def encode_payload(envelope: wire.Envelope, message: bytes, compress: bool = False) -> bytes:
    return b"".join(wire.payload_of(envelope, message, compress=compress).parts)


def decode_payload(payload: bytes, max_message: int) -> tuple[wire.Envelope, bytes]:
    """A complete payload -> (envelope, message bytes, inflated). Raises WireError."""
    parser = wire.PayloadParser(max_message)
    parser.feed(payload)
    envelope = parser.finish()
    message = payload[parser.message_offset :]
    return envelope, zlib.decompress(message) if envelope.encoding else message


def forged_zlib_payload(sender: str, recipient: str, claimed_size: int, compressed: bytes) -> bytes:
    """A payload whose header claims `claimed_size` and whose message is the zlib stream
    `compressed`, whatever it inflates to: what a hostile friend can send (no check of ours)."""
    header = json.dumps(
        {"from": sender, "to": [recipient], "size": claimed_size, "encoding": wire.ZLIB},
        separators=(",", ":"),
    ).encode()
    return wire.PREFIX.pack(wire.MAGIC, wire.VERSION, len(header)) + header + compressed
