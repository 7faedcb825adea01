"""The bridge-to-bridge codec: round trips, every split point, and hostile bytes."""

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from payloads import decode_payload, encode_payload, forged_zlib_payload

from toxbridge.mail.smtpreply import Reply
from toxbridge.tox import wire
from toxbridge.tox.wire import Envelope, PayloadParser, WireError

LIMIT = 1 << 20

# addr-specs (the wire takes nothing else): dot-atom local parts of atext and letters beyond ASCII.
_atoms = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-äßж", min_size=1, max_size=12)
_labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
addresses = st.builds(
    lambda local, domain: ".".join(local) + "@" + ".".join(domain),
    st.lists(_atoms, min_size=1, max_size=3),
    st.lists(_labels, min_size=1, max_size=3),
)


def payload_of(message: bytes, sender="alice@alice.test", rcpts=("b" * 64 + "@tox",)) -> bytes:
    return encode_payload(Envelope(sender, tuple(rcpts), len(message)), message)


@given(sender=addresses, rcpts=st.lists(addresses, min_size=1, max_size=5), message=st.binary(max_size=3000))
def test_payload_round_trip(sender, rcpts, message):
    payload = payload_of(message, sender, rcpts)
    envelope, body = decode_payload(payload, LIMIT)
    assert (envelope.sender, list(envelope.recipients), body) == (sender, rcpts, message)


def test_payload_is_raw_bytes_not_hex():
    message = os.urandom(10_000)
    payload = payload_of(message)
    assert payload.endswith(message)
    assert len(payload) - len(message) < 150


@pytest.mark.parametrize("piece", [4096, 128, 16, 1])
def test_fed_in_pieces(piece):
    message = b"Subject: x\r\n\r\n" + bytes(range(256)) * 8
    payload = payload_of(message)
    parser = PayloadParser(LIMIT)
    seen = [parser.feed(payload[i : i + piece]) for i in range(0, len(payload), piece)]
    assert [e for e in seen if e is not None] == [parser.finish()]
    assert parser.finish().size == len(message)


@settings(max_examples=50)
@given(message=st.binary(max_size=200))
def test_every_split_point(message):
    payload = payload_of(message)
    for cut in range(len(payload) + 1):
        parser = PayloadParser(LIMIT)
        parser.feed(payload[:cut])
        parser.feed(payload[cut:])
        assert parser.finish().size == len(message)


@given(st.binary(max_size=300))
def test_garbage_never_crashes(data):
    parser = PayloadParser(LIMIT)
    try:
        parser.feed(data)
        parser.finish()
    except WireError:
        pass


@pytest.mark.parametrize(
    "mangle, error",
    [
        (lambda p: b"XXXX" + p[4:], "bad magic"),
        (lambda p: p[:4] + b"\x09" + p[5:], "version 9"),
        (lambda p: p[:-1], "ended after"),
        (lambda p: p + b"x", "more message bytes"),
        (lambda p: p[:10], "inside the envelope header"),
    ],
)
def test_broken_payloads(mangle, error):
    with pytest.raises(WireError, match=error):
        decode_payload(mangle(payload_of(b"hello")), LIMIT)


def header_payload(header: bytes) -> bytes:
    return wire.PREFIX.pack(wire.MAGIC, wire.VERSION, len(header)) + header


@pytest.mark.parametrize(
    "header, error",
    [
        (b"\xff\xfe", "UTF-8 JSON"),
        (b"[]", "exactly from, to and size"),
        (b'{"from":"a@x","to":[],"size":0}', "1 to 255 recipients"),
        (b'{"from":"a@x","to":["b c@x"],"size":0}', "recipient is not a clean"),
        (b'{"from":"a@x\\r\\nRCPT","to":["b@x"],"size":0}', "sender is not a clean"),
        (b'{"from":"a@x","to":["b@x"],"size":-1}', "non-negative"),
        (b'{"from":"a@x","to":["b@x"],"size":true}', "non-negative"),
        (b'{"from":"a@x","to":["b@x"],"size":99999999}', "over the limit"),
    ],
)
def test_hostile_headers(header, error):
    with pytest.raises(WireError, match=error):
        decode_payload(header_payload(header), LIMIT)


def test_oversized_header_refused_before_it_arrives():
    prefix = wire.PREFIX.pack(wire.MAGIC, wire.VERSION, wire.MAX_HEADER + 1)
    with pytest.raises(WireError, match="over"):
        PayloadParser(LIMIT).feed(prefix)


replies = st.builds(
    Reply,
    st.integers(200, 599),
    st.text(alphabet=st.characters(min_codepoint=32, exclude_categories=["Cs"]), max_size=300),
)


@given(file_id=st.binary(min_size=32, max_size=32), items=st.lists(replies, min_size=1, max_size=255))
def test_result_round_trip_fits_one_packet(file_id, items):
    packet = wire.encode_result(file_id, items)
    assert len(packet) <= wire.MAX_PACKET
    got_id, got = wire.decode_result(packet)
    assert got_id == file_id
    assert [r.code for r in got] == [r.code for r in items]
    assert all(r.text.startswith(g.text) for r, g in zip(items, got, strict=False))


@given(st.binary(max_size=400))
def test_result_garbage_never_crashes(data):
    try:
        wire.decode_result(bytes([wire.PACKET_RESULT]) + data)
    except WireError:
        pass


def test_result_text_with_a_surrogate_still_encodes():
    _, (reply,) = wire.decode_result(wire.encode_result(b"\1" * 32, [Reply(250, "ok \ud800")]))
    assert reply == Reply(250, "ok ?")


def test_result_malformed():
    good = wire.encode_result(b"\1" * 32, [Reply(250, "2.0.0 ok"), Reply(550, "5.1.1 no")])
    for bad in (good[:-1], good + b"x", good[:33] + b"\0", good[:34] + b"\x00\x63\x00"):
        with pytest.raises(WireError):
            wire.decode_result(bad)


def test_greeting():
    assert wire.decode_greeting(wire.encode_greeting("toxbridge 0.1")) == (wire.VERSION, "toxbridge 0.1")


def outcome(pieces) -> tuple:
    """What a fresh parser makes of a payload fed in these pieces: the envelope and message
    byte count, or the text of the first WireError."""
    parser = PayloadParser(LIMIT)
    try:
        for piece in pieces:
            parser.feed(piece)
        envelope = parser.finish()
    except WireError as e:
        return ("error", str(e))
    return ("ok", envelope, parser.message_bytes)


hostile_payloads = st.builds(
    lambda message, where, byte, cut, tail: (
        (payload_of(message)[:cut] + tail)
        if cut is not None
        else bytes(
            b if i != where % len(payload_of(message)) else byte for i, b in enumerate(payload_of(message))
        )
    ),
    message=st.binary(max_size=60),
    where=st.integers(0, 200),
    byte=st.integers(0, 255),
    cut=st.none() | st.integers(0, 150),
    tail=st.binary(max_size=20),
)


@settings(max_examples=60)
@given(payload=hostile_payloads | st.binary(max_size=120))
def test_hostile_payload_same_outcome_at_every_split_point(payload):
    whole = outcome([payload])
    for cut in range(len(payload) + 1):
        assert outcome([payload[:cut], payload[cut:]]) == whole, cut
    assert outcome([payload[i : i + 1] for i in range(len(payload))]) == whole


@settings(max_examples=60)
@given(file_id=st.binary(min_size=32, max_size=32), items=st.lists(replies, min_size=1, max_size=4))
def test_result_packet_cut_at_every_point_is_refused(file_id, items):
    packet = wire.encode_result(file_id, items)
    for cut in range(len(packet)):
        with pytest.raises(WireError):
            wire.decode_result(packet[:cut])
    assert wire.decode_result(packet)[0] == file_id


@settings(max_examples=60)
@given(
    file_id=st.binary(min_size=32, max_size=32),
    items=st.lists(replies, min_size=1, max_size=3),
    where=st.integers(0, 2000),
    byte=st.integers(0, 255),
)
def test_result_packet_with_any_byte_changed_is_refused_or_means_what_it_says(file_id, items, where, byte):
    packet = bytearray(wire.encode_result(file_id, items))
    packet[where % len(packet)] = byte
    try:
        got_id, got = wire.decode_result(bytes(packet))
    except WireError:
        return
    # Accepted: then it is a well-formed packet that encodes back to the very same bytes.
    assert all(200 <= r.code <= 599 and not any(c < " " for c in r.text) for r in got)
    assert wire.encode_result(got_id, got) == bytes(packet)


def test_result_packet_over_the_size_limit_is_refused():
    with pytest.raises(WireError, match="too long"):
        wire.decode_result(bytes([wire.PACKET_RESULT]) + bytes(wire.MAX_PACKET))


def test_payload_parts_equal_the_encoded_payload_at_every_chunk_boundary():
    message = b"Subject: parts\r\n\r\n" + bytes(range(256)) * 3
    envelope = wire.Envelope("a@b.example", ("c@d.example",), len(message))
    whole = encode_payload(envelope, message)
    for pieces in ([message], [message[:5], memoryview(message)[5:]], [b"", message[:100], message[100:]]):
        parts = wire.payload_of(envelope, *pieces)
        assert len(parts) == len(whole) and parts.file_id == wire.file_id_of(whole)
        for length in (1, 7, len(parts.parts[0]), 1371):
            assert b"".join(parts.chunk(p, length) for p in range(0, len(whole), length)) == whole


# ---- compression (zlib, to peers that announce it)

TEXT = b"Subject: compressed\r\n\r\n" + b"".join(b"line %d of a letter home\r\n" % i for i in range(2000))


def zlib_payload(message: bytes) -> bytes:
    return encode_payload(
        Envelope("alice@alice.test", ("b" * 64 + "@tox",), len(message)), message, compress=True
    )


def test_text_goes_compressed_and_comes_back_byte_for_byte():
    payload = zlib_payload(TEXT)
    envelope, body = decode_payload(payload, LIMIT)
    assert envelope.encoding == wire.ZLIB and body == TEXT
    assert len(payload) < len(TEXT) / 4


def test_without_the_peer_announcing_it_nothing_is_compressed():
    envelope, body = decode_payload(payload_of(TEXT), LIMIT)
    assert envelope.encoding == "" and body == TEXT


def test_mail_that_does_not_shrink_goes_raw():
    message = b"Subject: photo\r\n\r\n" + os.urandom(200_000)  # an attachment compressed already
    payload = zlib_payload(message)
    assert payload.endswith(message)
    assert decode_payload(payload, LIMIT)[0].encoding == ""


@pytest.mark.parametrize("piece", [4096, 128, 16, 1])
def test_compressed_payload_fed_in_pieces(piece):
    payload = zlib_payload(TEXT + "ä".encode() * 10)
    parser = PayloadParser(LIMIT)
    for i in range(0, len(payload), piece):
        parser.feed(payload[i : i + piece])
    assert parser.finish().size == len(TEXT) + 20
    assert parser.eight_bit


def test_eight_bit_is_judged_after_inflating():
    parser = PayloadParser(LIMIT)
    parser.feed(zlib_payload(TEXT))  # the zlib stream has bytes over 127, the mail has none
    assert not parser.eight_bit


def test_each_mail_has_its_own_context():
    """Nothing of one mail shows in another's bytes: a mail compresses to the same bytes whatever
    was sent before it (and so a retry keeps its file_id)."""
    other = TEXT.replace(b"letter", b"postcard")
    alone = zlib_payload(TEXT)
    zlib_payload(other)
    assert zlib_payload(TEXT) == alone
    envelope = Envelope("alice@alice.test", ("b" * 64 + "@tox",), len(TEXT))
    assert wire.payload_of(envelope, TEXT[:100], TEXT[100:], compress=True).file_id == wire.file_id_of(alone)


def test_big_mail_pieces_compress_to_one_stream():
    message = TEXT * 30  # over FAST_ABOVE: level 1
    assert len(message) > wire.FAST_ABOVE
    envelope = Envelope("a@b.example", ("c@d.example",), len(message))
    parts = wire.payload_of(envelope, memoryview(message)[:7], message[7:], compress=True)
    assert decode_payload(b"".join(parts.parts), 1 << 24)[1] == message


BOMB = zlib.compress(bytes(LIMIT * 4), 9)  # 4 MiB of zeros in about 4 KiB


@pytest.mark.parametrize("claimed", [LIMIT, 1000])
def test_zlib_bomb_is_refused_while_inflating(claimed):
    """A small transfer that inflates beyond what its header claims (at most the limit) is
    refused as too big as soon as it passes the claim, not after inflating all of it."""
    assert len(BOMB) < 8192
    payload = forged_zlib_payload("m@tox", "a@tox", claimed, BOMB)
    parser = PayloadParser(LIMIT)
    with pytest.raises(wire.MessageTooBig, match="inflates to more"):
        for i in range(0, len(payload), 1371):
            parser.feed(payload[i : i + 1371])
    assert parser.message_bytes <= claimed


def test_claim_over_the_limit_is_too_big():
    with pytest.raises(wire.MessageTooBig, match="over the limit"):
        PayloadParser(LIMIT).feed(forged_zlib_payload("m@tox", "a@tox", LIMIT + 1, BOMB))


@pytest.mark.parametrize(
    "stream, error",
    [
        (zlib.compress(b"hello") + b"x", "after the end"),
        (zlib.compress(b"hello")[:-3], "inside the compressed message"),
        (b"\x78\x9c\xff\xff\xff", "damaged"),
    ],
)
def test_broken_zlib_stream_is_malformed(stream, error):
    parser = PayloadParser(LIMIT)
    with pytest.raises(WireError, match=error):
        parser.feed(forged_zlib_payload("m@tox", "a@tox", 5, stream))
        parser.finish()


def test_unknown_encoding_is_refused():
    payload = forged_zlib_payload("m@tox", "a@tox", 5, zlib.compress(b"hello")).replace(b'"zlib"', b'"gzip"')
    with pytest.raises(WireError, match="encoding must be zlib"):
        PayloadParser(LIMIT).feed(payload)


def test_capabilities_round_trip_and_hostile_words_dropped():
    assert wire.decode_capabilities(wire.encode_capabilities((wire.ZLIB, "later-thing"))) == {
        "zlib",
        "later-thing",
    }
    hostile = bytes([wire.PACKET_CAPABILITIES]) + b"zlib \x1b[31mred\n ZLIB \xff " + b"a" * 40
    assert wire.decode_capabilities(hostile) == {"zlib"}
    with pytest.raises(WireError):
        wire.decode_capabilities(wire.encode_greeting("toxbridge"))
