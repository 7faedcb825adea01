"""The one header scanner (toxbridge/mail/headers.py): fields and offsets as Dovecot's
message-header-parser reads them, at every split point and on awkward input; From: addresses."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from toxbridge.mail.headers import Header, from_addresses, scan, unfold

CORPUS = (
    b"Received: from a\r\n\tby b\r\n"
    b"From : Mom <mom@home.example>\r\n"
    b"no colon on this line\r\n"
    b" but a continuation: of it\r\n"
    b"Subject:\r\n \r\n\tfolded, with a line of only whitespace\n"
    b"X-Raw: bare\rcarriage return\r\n"
    b"N\xc3\xa4me\t: 8-bit\x00name\r\n"
    b": no name\r\n"
    b"\r\n"
    b"body\r\nFrom: body@example.org\r\n"
)
CORPUS_END = CORPUS.index(b"\r\n\r\n") + 2


def names(header: Header) -> list[bytes]:
    return [f.name for f in header.fields]


def check_invariants(data: bytes, header: Header) -> None:
    """Fields are contiguous from byte 0 and cover the header exactly; the header ends at an
    empty line (complete) or where the data ends."""
    assert header.data is data
    position = 0
    for f in header.fields:
        assert f.start == position and f.start <= f.name_end <= f.value_start <= f.value_end <= f.end
        assert f.name == data[f.start : f.name_end] and f.value == data[f.value_start : f.value_end]
        assert f.colon == (data[f.value_start - 1 : f.value_start] == b":")
        position = f.end
    assert position == header.end
    assert header.without([]) == data[: header.end]
    if header.complete:
        assert data.startswith((b"\n", b"\r\n", b"\r\r\n"), header.end)
    else:
        assert header.end == len(data)


def test_the_corpus_reads_as_dovecot_reads_it():
    header = scan(CORPUS)
    check_invariants(CORPUS, header)
    assert header.complete and header.end == CORPUS_END
    assert names(header) == [
        b"Received",
        b"From",
        b"no colon on this line",
        b"Subject",
        b"X-Raw",
        b"N\xc3\xa4me",
        b"",
    ]
    received, from_, no_colon, subject, raw, eight_bit, nameless = header.fields
    assert received.value == b" from a\r\n\tby b"
    assert from_.is_named("from") and from_.value == b" Mom <mom@home.example>"
    assert not no_colon.colon and no_colon.value == b"\r\n but a continuation: of it"
    assert subject.value == b"\r\n \r\n\tfolded, with a line of only whitespace"  # LF-only line end
    assert raw.value == b" bare\rcarriage return"  # a lone CR ends no line
    assert eight_bit.value == b" 8-bit\x00name" and nameless.colon
    assert [f.start for f in header.named("FROM")] == [from_.start]  # the From in the body is body


@pytest.mark.parametrize("cut", range(len(CORPUS) + 1))
def test_cut_at_every_byte_the_fields_read_so_far_are_the_whole_ones(cut):
    """A prefix reads as the whole does, up to its last field, which may still grow; the header
    is complete exactly when the empty line is in the prefix."""
    whole, data = scan(CORPUS), CORPUS[:cut]
    part = scan(data)
    check_invariants(data, part)
    if cut >= CORPUS_END + 2:
        assert part.fields == whole.fields and part.end == whole.end and part.complete
        return
    assert not part.complete and part.end == cut
    if cut == CORPUS_END + 1:  # the CR of the empty line, its LF not yet there: a line of its own
        assert part.fields[:-1] == whole.fields and part.fields[-1].name == b"\r"
        return
    n = len(part.fields)
    assert part.fields[: max(n - 1, 0)] == whole.fields[: max(n - 1, 0)]
    if n:
        assert part.fields[-1].start == whole.fields[n - 1].start


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"From : a@x.example\r\n\r\n", [b"From"]),  # whitespace before the colon: obsolete, still From
        (b"From \t \t: a@x.example\r\n\r\n", [b"From"]),
        (b"From\x00junk: a@x.example\r\n\r\n", [b"From\x00junk"]),  # Dovecot compares up to the NUL
        (b"junk line\r\nFrom: a@x.example\r\n\r\n", [b"From"]),  # a line without a colon goes on
        (b"X: a\nFrom: a@x.example\r\n\r\n", [b"From"]),  # mixed line ends
    ],
)
def test_these_are_from_fields(data, expected):
    header = scan(data)
    assert [f.name for f in header.named("From")] == expected


@pytest.mark.parametrize(
    "data",
    [
        b" From: a@x.example\r\n\r\n",  # the first line begins with a space: its name does too
        b"X-Other: y\r\n From: a@x.example\r\n\r\n",  # a continuation of X-Other
        b"X-Other: y\rFrom: a@x.example\r\n\r\n",  # a lone CR is no line end
        b"X-Other: y\r\n\r\nFrom: a@x.example\r\n",  # after the empty line: body
        b"X-Other: y\n\nFrom: a@x.example\n",
        b"X-Other: y\n\r\nFrom: a@x.example\r\n",  # an empty line in CRLF after LF lines
        b"X-Other: y\r\n\r\r\nFrom: a@x.example\r\n",  # CR CR LF: empty, as Dovecot stores it
        b"\r\nFrom: a@x.example\r\n",  # no header at all
        b"Fro m: a@x.example\r\n\r\n",
        b"From-X: a@x.example\r\n\r\n",
    ],
)
def test_these_are_not(data):
    assert scan(data).named("From") == []


@pytest.mark.parametrize(
    "data, end, complete, fields",
    [
        (b"", 0, False, 0),
        (b"\r\n", 0, True, 0),
        (b"\n", 0, True, 0),
        (b"\r\nX: body\r\n", 0, True, 0),
        (b"Subject: s", 10, False, 1),  # no line end at all
        (b"Subject: s\r\n", 12, False, 1),  # no empty line: all of it is header
        (b"Subject: s\r", 11, False, 1),
        (b"Subject: s\r\n\r", 13, False, 2),  # CR of an empty line not yet followed by its LF
        (b"Subject: s\r\n\r\r\n", 12, True, 1),  # Dovecot's LMTP drops one CR before a CRLF: empty
        (b"Subject: s\r\n\r\r\r\n\r\n", 16, True, 2),  # a line of a CR (and its line end) is a field
        (b"Subject: s\r\n \r\n\r\n", 15, True, 1),  # a line of a space continues the field
        (b"Subject: s\r\n\r\n continued? no: body\r\n", 12, True, 1),
    ],
)
def test_where_the_header_ends(data, end, complete, fields):
    header = scan(data)
    check_invariants(data, header)
    assert (header.end, header.complete, len(header.fields)) == (end, complete, fields)


def test_a_field_without_a_colon_is_named_by_its_whole_line():
    for data in (b"X-Toxbridge-Id\r\n\r\n", b"X-Toxbridge-Id\r\r\n\r\n", b"X-Toxbridge-Id\n\n"):
        (field,) = scan(data).fields
        assert field.name == b"X-Toxbridge-Id" and not field.colon and field.value == b""
        assert field.is_named("x-toxbridge-id") and field.end == data.index(b"\n") + 1
    (field,) = scan(b"X-Toxbridge-Id \r\n\r\n").fields
    assert not field.is_named("x-toxbridge-id")  # Dovecot keeps the space in such a name


def test_without_cuts_fields_out_byte_for_byte():
    header = scan(CORPUS)
    keep = header.fields[0], header.fields[3]
    cut = header.without(f for f in header.fields if f not in keep)
    assert cut == b"".join(CORPUS[f.start : f.end] for f in keep)


def test_unfold():
    assert unfold(b" a\r\n b\n\tc\r\nd") == b" a b\tc\r\nd"  # a line end before no WSP stays


_name = st.binary(min_size=0, max_size=12).filter(lambda b: b"\n" not in b and b":" not in b)
_text = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))


@given(
    fields=st.lists(
        st.tuples(_name, st.sampled_from([b":", b" :", b"\t:", b""]), _text, st.lists(_text, max_size=2)),
        max_size=6,
    ),
    eols=st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=1, max_size=4),
    body=st.binary(max_size=60),
)
def test_property_any_header_reads_back_field_by_field(fields, eols, body):
    lines, expected = [], []
    for i, (name, colon, value, folds) in enumerate(fields):
        eol = eols[i % len(eols)]
        if not colon:
            assume(b":" not in value)
            name, value = name + value, b""
        if name.endswith(b"\r") or value.endswith(b"\r") or any(f.endswith(b"\r") for f in folds):
            assume(False)  # that CR would join the line end
        if not name or name[:1] in (b" ", b"\t") or (not colon and not name.strip(b"\r")):
            assume(False)  # not a line that begins a field
        lines.append(name + colon + value + eol + b"".join(b" " + f + eol for f in folds))
        expected.append(name.rstrip(b" \t") if colon else name)
    data = b"".join(lines) + b"\r\n" + body
    header = scan(data)
    check_invariants(data, header)
    assert header.complete and header.end == len(b"".join(lines))
    assert names(header) == expected


@given(st.binary(max_size=300))
def test_property_any_bytes_keep_the_invariants(data):
    check_invariants(data, scan(data))


# ---------------------------------------------------------------- from_addresses


@pytest.mark.parametrize(
    "message, addresses",
    [
        (b"From: tarek@example.org\r\nTo: mom@home.example\r\n\r\nhi\r\n", ["tarek@example.org"]),
        (b"From: Tarek <Tarek@Example.ORG>\r\n\r\n", ["tarek@example.org"]),
        (
            b'From: "Doe, Jane" <jane@example.org>, k@example.net\r\n\r\n',
            ["jane@example.org", "k@example.net"],
        ),
        (b'From: "evil@tox" <real@example.org>\r\n\r\n', ["real@example.org"]),
        (b"From: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\n\r\n", ["j@example.org"]),
        (b"From: J\xc3\xb6rg <j@example.org>\r\n\r\n", ["j@example.org"]),  # raw UTF-8 display name
        (b"From: j@example.org (J\xc3\xb6rg)\r\n\r\n", ["j@example.org"]),
        (b"From:\r\n  Someone\r\n  <folded@example.org>\r\nSubject: x\r\n\r\n", ["folded@example.org"]),
        (b"From: a@example.org,\r\n\tb@example.org\r\n\r\n", ["a@example.org", "b@example.org"]),
        (b"From: a@example.org\r\nFrom: c@example.org\r\n\r\n", ["a@example.org", "c@example.org"]),
        (b"FROM: a@example.org\r\n\r\n", ["a@example.org"]),
        (b"From: a@example.org\nSubject: LF only\n\nFrom: body@example.org\n", ["a@example.org"]),
        (b"From: a@example.org\n", ["a@example.org"]),  # header only, no body
        (b"Subject: no from\r\n\r\nFrom: body@example.org\r\n", []),
        (b"Subject: no from\n\nFrom: body@example.org\n", []),
        (b"\r\nFrom: body@example.org\r\n", []),  # no header at all
        (b"", []),
        (b"From: undisclosed-recipients:;\r\n\r\n", []),
        (b"From: <>\r\n\r\n", []),
        (b"From: just a name\r\n\r\n", []),
        (b"From: a@example.org\r\n\r\nbody\n\nFrom: lf-in-body@example.org\n", ["a@example.org"]),
    ],
)
def test_from_addresses(message, addresses):
    assert from_addresses(scan(message)) == addresses


_local = st.text("abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=12)
_domain = st.from_regex(r"[a-z0-9]{1,10}\.[a-z]{2,6}", fullmatch=True)
_display_name = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"), max_size=20
)


@given(
    people=st.lists(st.tuples(_display_name, _local, _domain), min_size=1, max_size=4),
    crlf=st.booleans(),
    body=st.binary(max_size=200),
)
def test_from_addresses_property(people, crlf, body):
    """Any display names, encoded as a mailer would, give back the addresses in order."""
    assume(
        all(
            not local.startswith(".") and not local.endswith(".") and ".." not in local
            for _, local, _ in people
        )
    )
    eol = b"\r\n" if crlf else b"\n"
    values = ", ".join(
        email.utils.formataddr((name, f"{local}@{domain}"), charset="utf-8") for name, local, domain in people
    )
    message = b"Subject: x" + eol + b"From: " + values.encode() + eol + eol + body
    assert from_addresses(scan(message)) == [f"{lp}@{d}".lower() for _, lp, d in people]


@pytest.mark.parametrize(
    "message, addresses",
    [
        (b"From : forged@home.example\r\n\r\n", ["forged@home.example"]),  # issue 15, point 1
        (b"junk\r\nFrom: forged@home.example\r\n\r\n", ["forged@home.example"]),
        (b"From: m\xc3\xb6m@example.org\r\n\r\n", ["m\u00f6m@example.org"]),  # SMTPUTF8
        (b"From: a@example.org\n\r\nFrom: body@example.org\r\n", ["a@example.org"]),
        (b"X: y\rFrom: not-a-field@example.org\r\n\r\n", []),
    ],
)
def test_from_addresses_as_dovecot_reads_the_header(message, addresses):
    assert from_addresses(scan(message)) == addresses
