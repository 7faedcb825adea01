"""The trust headers of a mail that came over Tox: the friend's forged ones stripped byte for
byte (wherever Dovecot would see them), ours written on top."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toxbridge.mail import trust_headers
from toxbridge.mail.headers import scan

AUTHSERV = "toxbridge.example"


def strip(message: bytes) -> bytes:
    """The whole message with our fields stripped from its header."""
    header = scan(message)
    return trust_headers.strip(header, AUTHSERV) + message[header.end :]


def test_strip_removes_our_headers_and_keeps_the_rest_byte_for_byte():
    received = b"Received: from x\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    theirs = b"Authentication-Results: mx.example.org; dkim=pass header.d=example.org\r\n"
    subject = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=  \r\n"
    kept_at_end = b"X-Toxbridge-Idea: not ours\r\nFrom: a@example.org\r\n"
    body = (
        b"\r\nX-Toxbridge-Id: in the body stays\r\n"
        b"Authentication-Results: toxbridge.example; x-tox=pass\r\n"
        b"\r\n\x00\xff binary tail without newline"
    )
    message = (
        received
        + b"X-Toxbridge-Id: forged\r\n"
        + b"Authentication-Results: toxbridge.example; x-tox=pass\r\n  header.from=forged@example.org\r\n"
        + theirs
        + b"x-toxbridge-warning: forged\r\n"
        + subject
        + b"AUTHENTICATION-RESULTS: TOXBRIDGE.Example ; spf=pass\r\n"
        + kept_at_end
        + body
    )
    assert strip(message) == received + theirs + subject + kept_at_end + body


def test_strip_lf_only_message():
    message = (
        b"X-Toxbridge-Warning: a\n continued\n\tand more\nSubject: s\n"
        b"Authentication-Results: toxbridge.example;\n none\n\nX-Toxbridge-Id: body\n"
    )
    assert strip(message) == b"Subject: s\n\nX-Toxbridge-Id: body\n"


def test_strip_continuation_of_a_kept_header_is_kept():
    message = b"Subject: one\r\n two\r\nX-Toxbridge-Id: x\r\n y\r\nTo: t\r\n\tu\r\n\r\n"
    assert strip(message) == b"Subject: one\r\n two\r\nTo: t\r\n\tu\r\n\r\n"


def test_strip_other_authserv_ids_that_only_look_alike():
    for value in (
        b"toxbridge.example.evil.org; x=pass",
        b"mx.toxbridge.example; x=pass",
        b"toxbridge; x=pass",
        b"; x=pass",
        b"",
    ):
        message = b"Authentication-Results: " + value + b"\r\n\r\nbody"
        assert strip(message) == message


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\r\n",
        b"\r\nX-Toxbridge-Id: body only\r\n",
        b"\nX-Toxbridge-Id: body only\n",
        b"Subject: header only, no blank line",
        b"Subject: header only\r\n",
        b"Subject: x\r\n\r\n",
        b"Subject: x\n\n",
    ],
)
def test_strip_leaves_messages_without_our_headers_alone(message):
    assert strip(message) == message


def test_strip_header_only_message():
    assert strip(b"Subject: x\r\nX-Toxbridge-Id: y") == b"Subject: x\r\n"


@pytest.mark.parametrize(
    "header",
    [
        b"Authentication-Results:\r\n toxbridge.example; x-tox=pass\r\n",  # folded before the authserv-id
        b"Authentication-Results: toxbridge.example 1; x-tox=pass\r\n",  # RFC 8601 version number
        b"Authentication-Results: (forged) toxbridge.example; x-tox=pass\r\n",  # CFWS before the id
    ],
)
def test_strip_authentication_results_in_other_valid_forms(header):
    assert strip(b"Subject: s\r\n" + header + b"\r\nbody") == b"Subject: s\r\n\r\nbody"


_header_name = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda n: n.lower() not in ("x-toxbridge-id", "x-toxbridge-warning", "authentication-results")
)
_value = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(
    headers=st.lists(st.tuples(_header_name, _value, st.lists(_value, max_size=2)), max_size=6),
    ours=st.lists(
        st.tuples(
            st.integers(0, 6),
            st.sampled_from(
                [
                    b"X-Toxbridge-Id",
                    b"x-toxbridge-warning",
                    b"Authentication-Results: Toxbridge.Example;",
                    b"authentication-results:toxbridge.example ;",
                ]
            ),
            _value,
            st.lists(_value, max_size=2),
        ),
        max_size=4,
    ),
    crlf=st.booleans(),
    body=st.binary(max_size=100),
)
def test_strip_property(headers, ours, crlf, body):
    """Inserting our headers anywhere, then stripping, gives back exactly the message without them."""
    eol = b"\r\n" if crlf else b"\n"

    def field(name, value, folds):
        sep = b" " if name.endswith(b";") else b": "
        return name + sep + value + eol + b"".join(b"\t" + f + eol for f in folds)

    plain = [field(n.encode(), v, f) for n, v, f in headers]
    mixed = list(plain)
    for at, name, value, folds in sorted(ours, key=lambda o: -o[0]):
        mixed.insert(min(at, len(mixed)), field(name, value, folds))
    tail = eol + body
    assert strip(b"".join(mixed) + tail) == b"".join(plain) + tail
    assert strip(b"".join(plain) + tail) == b"".join(plain) + tail


@pytest.mark.parametrize(
    "forged",
    [
        b"X-Toxbridge-Id : forged\r\n",  # whitespace before the colon
        b"X-Toxbridge-Id\r\n",  # no colon: Dovecot still sees a field of that name
        b"Authentication-Results : toxbridge.example; x-tox=pass\r\n",
        b"Authentication-Results\t:\r\n\ttoxbridge.example; x-tox=pass\r\n",
    ],
)
def test_strip_what_dovecot_reads_as_ours_after_a_line_without_a_colon(forged):
    message = b"Subject: s\r\nno colon here\r\n" + forged + b"From: a@example.org\r\n\r\nbody"
    assert strip(message) == b"Subject: s\r\nno colon here\r\nFrom: a@example.org\r\n\r\nbody"


def test_a_lone_cr_joins_what_follows_to_the_field_and_nothing_is_cut():
    message = b"Subject: s\rX-Toxbridge-Id: part of the subject\r\n\r\n"
    assert strip(message) == message


def test_stamp_records_the_key_the_verdict_and_the_payload_hash():
    stamped = trust_headers.stamp(
        "toxbridge.example",
        "mom@home.example",
        "ab" * 32,
        b"\x01" * 32,
        "",
        "fail",
        "x@y.example (forged)\r\nInjected: yes",
    )
    header = scan(stamped + b"\r\n")
    assert [f.name for f in header.fields] == [
        b"X-Toxbridge-Id",
        b"X-Toxbridge-Warning",
        b"Received",
        b"Authentication-Results",
    ]
    assert header.fields[0].value == b" " + b"01" * 32
    results = header.fields[3].value
    assert results.startswith(b" toxbridge.example; x-tox=fail\r\n\t(x@y.example [forged] Injected: yes)\r\n")
    assert results.endswith(b"smtp.mailfrom=<> x-tox.key=" + b"ab" * 32)
    kept = scan(trust_headers.strip(header, "toxbridge.example"))  # a friend cannot pre-set these
    assert [f.name for f in kept.fields] == [b"Received"]
    passed = trust_headers.stamp(
        "h.example", "mom@home.example", "ab" * 32, b"\x01" * 32, "t@x.example", "pass", "ok"
    )
    assert b"X-Toxbridge-Warning" not in passed and b"smtp.mailfrom=t@x.example" in passed
