"""A partial transfer file picked up again (no Tox needed)."""

from __future__ import annotations

import hashlib

from toxbridge import wire
from toxbridge.receiver import Incoming

MESSAGE = b"Subject: resume\r\n\r\n" + b"x" * 5000
PAYLOAD = wire.encode_payload(wire.Envelope("a@b.example", ("c@d.example",), len(MESSAGE)), MESSAGE)


def incoming(tmp_path, kept: bytes) -> Incoming:
    path = tmp_path / "partial"
    path.write_bytes(kept)
    return Incoming(0, 1, wire.file_id_of(PAYLOAD), len(PAYLOAD), path, wire.PayloadParser(10**6))


def finish(inc: Incoming, resume_at: int) -> None:
    inc.file.write(PAYLOAD[resume_at:])
    inc.take(PAYLOAD[resume_at:])
    inc.close()


def test_a_broken_transfer_resumes_where_it_stopped(tmp_path):
    inc = incoming(tmp_path, PAYLOAD[:3000])
    assert inc.open() == 3000
    finish(inc, 3000)
    assert inc.hasher.digest() == inc.file_id and inc.path.read_bytes() == PAYLOAD
    assert inc.parser.finish().size == len(MESSAGE)


def test_a_complete_file_left_by_a_killed_bridge_resumes_one_byte_before_the_end(tmp_path):
    """toxcore cannot seek to the end of a file: the last byte comes again."""
    inc = incoming(tmp_path, PAYLOAD)
    assert inc.open() == len(PAYLOAD) - 1
    finish(inc, len(PAYLOAD) - 1)
    assert inc.hasher.digest() == hashlib.sha256(PAYLOAD).digest() and inc.path.read_bytes() == PAYLOAD


def test_a_file_that_is_not_a_payload_starts_over(tmp_path):
    inc = incoming(tmp_path, b"garbage that is no toxbridge payload")
    assert inc.open() == 0
    finish(inc, 0)
    assert inc.hasher.digest() == inc.file_id
