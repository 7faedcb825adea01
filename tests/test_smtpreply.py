"""Reply parsing and DATA framing for the Dovecot-facing LMTP client."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toxbridge.mail.smtpreply import DotStuffer, Reply, ReplyError, ReplyReader

STREAM = b"250-mx.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n550 5.1.1 <x> unknown\r\n250 2.0.0 ok\n"


def dot_stuff(message: bytes) -> bytes:
    """The DATA section for `message` in one piece."""
    stuffer = DotStuffer()
    return stuffer.feed(message) + stuffer.finish()


@pytest.mark.parametrize("piece", [4096, 16, 1])
def test_replies_in_pieces(piece):
    reader = ReplyReader()
    got = []
    for i in range(0, len(STREAM), piece):
        got += reader.feed(STREAM[i : i + piece])
    assert got == [
        Reply(250, "mx.test 8BITMIME SMTPUTF8"),
        Reply(550, "5.1.1 <x> unknown"),
        Reply(250, "2.0.0 ok"),
    ]


@pytest.mark.parametrize("bad", [b"hello\r\n", b"250-a\r\n550 b\r\n", b"6xx oops\r\n", b"250" + b"x" * 5000])
def test_malformed(bad):
    with pytest.raises(ReplyError):
        ReplyReader().feed(bad)


def unstuff(data: bytes) -> bytes:
    assert data.endswith(b".\r\n")
    lines = data[:-3].split(b"\r\n")[:-1]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20))
def test_dot_stuffing_round_trip(lines):
    message = b"".join(line + b"\r\n" for line in lines)
    framed = dot_stuff(message)
    assert b"\r\n.\r\n" not in b"\r\n" + framed[:-3]
    assert unstuff(framed) == message


def test_bare_newlines_become_crlf_and_last_line_is_ended():
    assert dot_stuff(b"a\nb") == b"a\r\nb\r\n.\r\n"
    assert dot_stuff(b".\n") == b"..\r\n.\r\n"


def test_dot_stuffing_fed_at_every_split_point_equals_one_piece():
    message = b"Subject: x\r\n\r\n.leading dot\n..two\r\nbare\rcr\r\n.\r\nlast line without end"
    whole = dot_stuff(message)
    for cut in range(len(message) + 1):
        for second in (cut, min(len(message), cut + 3)):
            stuffer = DotStuffer()
            pieces = [message[:cut], message[cut:second], message[second:]]
            assert b"".join(stuffer.feed(p) for p in pieces) + stuffer.finish() == whole
