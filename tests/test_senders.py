"""Who may a friend send as: the verdict, From: parsing, and stripping headers only we may set."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from toxbridge.contacts import sender_check as senders
from toxbridge.address import tox_checksum

KEY = bytes([0xA1]) * 32
OTHER = bytes([0xB2]) * 32
NOSPAM = b"\x01\x02\x03\x04"
FULL_ID = KEY + NOSPAM + tox_checksum(KEY + NOSPAM)
OTHER_ID = OTHER + NOSPAM + tox_checksum(OTHER + NOSPAM)

TIES = {
    "tarek@example.org": ("contact 'Tarek'", {KEY}),
    "learned@example.org": ("learned pairing", {KEY}),
    "grandma@example.org": ("contact 'Grandma'", {OTHER}),
    "stranger-learned@example.org": ("learned pairing", {OTHER}),
}


def claims(address: str) -> tuple[str, set[bytes]]:
    return TIES.get(address, ("", set()))


def check(envelope: str, from_: list[str], learn: bool = True) -> senders.Verdict:
    return senders.check(KEY, envelope, from_, claims, learn)


# ---------------------------------------------------------------- check


@pytest.mark.parametrize("address", [
    f"{KEY.hex()}@tox", f"{KEY.hex().upper()}@TOX", f"{FULL_ID.hex()}@tox", f"{FULL_ID.hex().upper()}@Tox",
])
def test_own_tox_address_passes(address):
    verdict = check(address, [address])
    assert verdict.ok and verdict.result == senders.PASS
    assert "is the key itself" in verdict.reason


@pytest.mark.parametrize("address", [
    f"{OTHER.hex()}@tox", f"{OTHER_ID.hex()}@tox",
    f"{KEY.hex()[:-2]}@tox",  # malformed: too short
    f"{FULL_ID.hex()[:-1]}0@tox" if FULL_ID.hex()[-1] != "0" else f"{FULL_ID.hex()[:-1]}1@tox",  # bad checksum
])
def test_another_or_malformed_tox_address_fails(address):
    for envelope, from_ in ((address, []), ("", [address]), (f"{KEY.hex()}@tox", [address])):
        verdict = check(envelope, from_)
        assert not verdict.ok and verdict.result == senders.FAIL
        assert "is not the sending friend's own Tox address" in verdict.reason
    

@pytest.mark.parametrize("address, how", [
    ("tarek@example.org", "contact 'Tarek'"),
    ("Tarek@Example.ORG", "contact 'Tarek'"),
    ("learned@example.org", "learned pairing"),
])
def test_address_tied_to_this_key_passes(address, how):
    verdict = check(address, [address], learn=False)
    assert verdict.ok
    assert verdict.reason == f"{address.lower()} by {how}"


@pytest.mark.parametrize("address, how", [
    ("grandma@example.org", "contact 'Grandma'"),
    ("stranger-learned@example.org", "learned pairing"),
])
def test_address_of_another_key_fails(address, how):
    for learn in (True, False):
        for envelope, from_ in ((address, []), ("tarek@example.org", [address]), (address, ["tarek@example.org"])):
            verdict = check(envelope, from_, learn)
            assert not verdict.ok
            assert verdict.reason == f"{address} belongs to another Tox {how}, not to the sending friend"
        

def test_address_of_another_key_without_how_says_contact():
    verdict = senders.check(KEY, "x@example.org", [], lambda a: ("", {OTHER}), True)
    assert not verdict.ok and "belongs to another Tox contact" in verdict.reason


def test_unclaimed_address_is_learned_when_allowed():
    verdict = check("New@Example.org", ["new@example.org", "other-new@example.org"], learn=True)
    assert verdict.ok
    assert verdict.reason == ("new@example.org first seen from this key, learned; "
                              "other-new@example.org first seen from this key, learned")


def test_unclaimed_address_mixed_with_tied_ones():
    verdict = check(f"{KEY.hex()}@tox", ["tarek@example.org", "new@example.org"], learn=True)
    assert verdict.ok and verdict.reason.endswith("; new@example.org first seen from this key, learned")
    assert verdict.reason.startswith(f"{KEY.hex()}@tox is the key itself; tarek@example.org by contact 'Tarek'; ")


def test_unclaimed_address_fails_when_learning_is_off():
    verdict = check("tarek@example.org", ["new@example.org"], learn=False)
    assert not verdict.ok
    assert verdict.reason == "new@example.org is not tied to the sending friend's Tox key by any contact"


def test_nothing_is_learned_when_another_address_fails():
    verdict = check("new@example.org", ["grandma@example.org"], learn=True)
    assert not verdict.ok


def test_no_sender_at_all_fails():
    for envelope, from_ in (("", []), ("", [""])):
        verdict = check(envelope, from_)
        assert not verdict.ok and verdict.reason == "the mail names no sender at all"


def test_null_envelope_sender_with_from_is_judged_by_from():
    assert check("", ["tarek@example.org"]).ok
    assert not check("", ["grandma@example.org"]).ok


def test_each_address_is_asked_once_in_lower_case():
    asked = []

    def recording(address):
        asked.append(address)
        return claims(address)

    senders.check(KEY, "Tarek@Example.org", ["tarek@example.org", "TAREK@EXAMPLE.ORG", "new@example.org"],
                  recording, True)
    assert asked == ["tarek@example.org", "new@example.org"]


# ---------------------------------------------------------------- from_addresses


@pytest.mark.parametrize("message, addresses", [
    (b"From: tarek@example.org\r\nTo: mom@home.example\r\n\r\nhi\r\n", ["tarek@example.org"]),
    (b"From: Tarek <Tarek@Example.ORG>\r\n\r\n", ["tarek@example.org"]),
    (b'From: "Doe, Jane" <jane@example.org>, k@example.net\r\n\r\n', ["jane@example.org", "k@example.net"]),
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
])
def test_from_addresses(message, addresses):
    assert senders.from_addresses(message) == addresses


_local = st.text("abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=12)
_domain = st.from_regex(r"[a-z0-9]{1,10}\.[a-z]{2,6}", fullmatch=True)
_name = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"), max_size=20)


@given(people=st.lists(st.tuples(_name, _local, _domain), min_size=1, max_size=4),
       crlf=st.booleans(), body=st.binary(max_size=200))
def test_from_addresses_property(people, crlf, body):
    """Any display names, encoded as a mailer would, give back the addresses in order."""
    assume(all(not local.startswith(".") and not local.endswith(".") and ".." not in local
               for _, local, _ in people))
    eol = b"\r\n" if crlf else b"\n"
    values = ", ".join(email.utils.formataddr((name, f"{local}@{domain}"), charset="utf-8")
                       for name, local, domain in people)
    message = b"Subject: x" + eol + b"From: " + values.encode() + eol + eol + body
    assert senders.from_addresses(message) == [f"{lp}@{d}".lower() for _, lp, d in people]


# ---------------------------------------------------------------- strip_trust_headers

AUTHSERV = "toxbridge.example"


def strip(message: bytes) -> bytes:
    return senders.strip_trust_headers(message, AUTHSERV)


def test_strip_removes_our_headers_and_keeps_the_rest_byte_for_byte():
    message = (b"Received: from x\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
               b"X-Toxbridge-Id: forged\r\n"
               b"Authentication-Results: toxbridge.example; x-tox=pass\r\n"
               b"  header.from=forged@example.org\r\n"
               b"Authentication-Results: mx.example.org; dkim=pass header.d=example.org\r\n"
               b"x-toxbridge-warning: forged\r\n"
               b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=  \r\n"
               b"AUTHENTICATION-RESULTS: TOXBRIDGE.Example ; spf=pass\r\n"
               b"X-Toxbridge-Idea: not ours\r\n"
               b"From: a@example.org\r\n"
               b"\r\n"
               b"X-Toxbridge-Id: in the body stays\r\n"
               b"Authentication-Results: toxbridge.example; x-tox=pass\r\n"
               b"\r\n\x00\xff binary tail without newline")
    assert strip(message) == (
        b"Received: from x\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Authentication-Results: mx.example.org; dkim=pass header.d=example.org\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=  \r\n"
        b"X-Toxbridge-Idea: not ours\r\n"
        b"From: a@example.org\r\n"
        b"\r\n"
        b"X-Toxbridge-Id: in the body stays\r\n"
        b"Authentication-Results: toxbridge.example; x-tox=pass\r\n"
        b"\r\n\x00\xff binary tail without newline")


def test_strip_lf_only_message():
    message = (b"X-Toxbridge-Warning: a\n continued\n\tand more\nSubject: s\n"
               b"Authentication-Results: toxbridge.example;\n none\n\nX-Toxbridge-Id: body\n")
    assert strip(message) == b"Subject: s\n\nX-Toxbridge-Id: body\n"


def test_strip_continuation_of_a_kept_header_is_kept():
    message = b"Subject: one\r\n two\r\nX-Toxbridge-Id: x\r\n y\r\nTo: t\r\n\tu\r\n\r\n"
    assert strip(message) == b"Subject: one\r\n two\r\nTo: t\r\n\tu\r\n\r\n"


def test_strip_other_authserv_ids_that_only_look_alike():
    for value in (b"toxbridge.example.evil.org; x=pass", b"mx.toxbridge.example; x=pass",
                  b"toxbridge; x=pass", b"; x=pass", b""):
        message = b"Authentication-Results: " + value + b"\r\n\r\nbody"
        assert strip(message) == message


@pytest.mark.parametrize("message", [
    b"",
    b"\r\n",
    b"\r\nX-Toxbridge-Id: body only\r\n",
    b"\nX-Toxbridge-Id: body only\n",
    b"Subject: header only, no blank line",
    b"Subject: header only\r\n",
    b"Subject: x\r\n\r\n",
    b"Subject: x\n\n",
])
def test_strip_leaves_messages_without_our_headers_alone(message):
    assert strip(message) == message


def test_strip_header_only_message():
    assert strip(b"Subject: x\r\nX-Toxbridge-Id: y") == b"Subject: x\r\n"


@pytest.mark.parametrize("header", [
    b"Authentication-Results:\r\n toxbridge.example; x-tox=pass\r\n",  # folded before the authserv-id
    b"Authentication-Results: toxbridge.example 1; x-tox=pass\r\n",  # RFC 8601 version number
    b"Authentication-Results: (forged) toxbridge.example; x-tox=pass\r\n",  # CFWS before the id
])
def test_strip_authentication_results_in_other_valid_forms(header):
    assert strip(b"Subject: s\r\n" + header + b"\r\nbody") == b"Subject: s\r\n\r\nbody"


_header_name = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda n: n.lower() not in ("x-toxbridge-id", "x-toxbridge-warning", "authentication-results"))
_value = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(headers=st.lists(st.tuples(_header_name, _value, st.lists(_value, max_size=2)), max_size=6),
       ours=st.lists(st.tuples(st.integers(0, 6), st.sampled_from([
           b"X-Toxbridge-Id", b"x-toxbridge-warning", b"Authentication-Results: Toxbridge.Example;",
           b"authentication-results:toxbridge.example ;"]), _value, st.lists(_value, max_size=2)), max_size=4),
       crlf=st.booleans(), body=st.binary(max_size=100))
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
