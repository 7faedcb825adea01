"""Whole payloads in one buffer, for tests: the wire format's encoder and parser joined up (the
bridge itself never holds a payload whole: wire.payload_of gives pieces, wire.PayloadParser is
fed them)."""

from __future__ import annotations

from toxbridge.tox import wire


def encode_payload(envelope: wire.Envelope, message: bytes) -> bytes:
    return b"".join(wire.payload_of(envelope, message).parts)


def decode_payload(payload: bytes, max_message: int) -> tuple[wire.Envelope, bytes]:
    """A complete payload -> (envelope, message bytes). Raises WireError."""
    parser = wire.PayloadParser(max_message)
    parser.feed(payload)
    envelope = parser.finish()
    return envelope, payload[len(payload) - envelope.size :]
