"""Issue 15 point 3: a friend cannot write into our own Authentication-Results.

The wire admitted any address without spaces, controls and angle brackets, so a friend's
envelope sender `x@y;x-tox=pass` became `smtp.mailfrom=x@y;x-tox=pass` (a second result in our
name), and `(`, `"`, U+2028 passed as well. Now the wire takes addr-specs only and the header
quotes what RFC 8601 needs quoted."""

from __future__ import annotations

import re

import pytest
from payloads import decode_payload, encode_payload

from toxbridge.mail import trust_headers
from toxbridge.tox import wire

HOSTILE = [
    "mom@home.example;x-tox=pass",
    "mom@home.example;",
    "a(comment)@b.example",
    "a@b.example(x)",
    'a"b@c.example',
    "mom\u2028@home.example",
    "mom@home.example\u2029x",
    "mom@home.example\u200b",
    "a\\b@c.example",
    "@home.example",
    "mom@",
    "mom",
    "mom@@home.example",
    "mom@home..example",
    ".mom@home.example",
    "mom@home.example,x@y.example",
]
GOOD = [
    "mom@home.example",
    "tarek+work@example.org",
    "o'brien@example.ie",
    "grüße@bücher.example",
    '"john.smith"@example.org',
    "user@[192.0.2.1]",
    "a.b-c_d@sub.example-host.org",
]


def payload(sender: str, recipient: str = "bob@bob.test") -> bytes:
    return encode_payload(wire.Envelope(sender, (recipient,), 3), b"hi\n")


@pytest.mark.parametrize("address", HOSTILE)
def test_a_hostile_address_is_refused_at_the_wire(address):
    with pytest.raises(wire.WireError):
        decode_payload(payload(address), 1000)
    with pytest.raises(wire.WireError):
        decode_payload(payload("mom@home.example", address), 1000)


@pytest.mark.parametrize("address", GOOD + [""])
def test_an_ordinary_sender_still_crosses(address):
    envelope, message = decode_payload(payload(address), 1000)
    assert envelope.sender == address and message == b"hi\n"


def _results(header: bytes) -> list[str]:
    """The resinfo parts of an Authentication-Results value: `;` outside quotes and comments."""
    value = header.decode().split("Authentication-Results:", 1)[1].split("\r\n", 3)
    text = " ".join(value[:3])
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    text = re.sub(r"\((?:[^()\\]|\\.)*\)", "", text)
    return [part.strip() for part in text.split(";")]


@pytest.mark.parametrize("sender", GOOD)
def test_our_header_has_one_result_whatever_the_sender(sender):
    stamped = trust_headers.stamp(
        "bridge.bob.test",
        "bob@bob.test",
        "ab" * 32,
        b"\0" * 32,
        sender,
        "pass",
        "a reason; with (parens) and a trailing backslash \\",
    )
    parts = _results(stamped)
    assert len(parts) == 2 and parts[0] == "bridge.bob.test", parts
    assert parts[1].startswith("x-tox=pass") and "x-tox.key=" + "ab" * 32 in parts[1]
    if sender.startswith('"'):
        assert 'smtp.mailfrom="\\"john.smith\\"@example.org"' in stamped.decode()
