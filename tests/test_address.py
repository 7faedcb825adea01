"""Tox mail addresses: checksum, lengths, letter case."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toxbridge.address import AddressError, is_tox_address, parse_tox_address, tox_checksum


def make_id(key: bytes, nospam: bytes = b"\1\2\3\4") -> str:
    return (key + nospam + tox_checksum(key + nospam)).hex()


@given(key=st.binary(min_size=32, max_size=32), nospam=st.binary(min_size=4, max_size=4))
def test_full_id_any_case(key, nospam):
    text = make_id(key, nospam)
    for variant in (text, text.upper()):
        parsed = parse_tox_address(f"{variant}@TOX")
        assert parsed.public_key == key
        assert parsed.tox_id == key + nospam + tox_checksum(key + nospam)
        assert parsed.mailbox == key.hex() + "@tox"


def test_public_key_only():
    key = os.urandom(32)
    parsed = parse_tox_address(key.hex().upper() + "@tox")
    assert (parsed.public_key, parsed.tox_id) == (key, None)


@pytest.mark.parametrize(
    "address, error",
    [
        ("0" * 75 + "@tox", "76 hex digits"),
        ("z" * 64 + "@tox", "not hexadecimal"),
        ("a" * 64 + "@example.org", "not in the tox domain"),
        ("@tox", "not an e-mail address"),
        ("tox", "not an e-mail address"),
    ],
)
def test_invalid(address, error):
    with pytest.raises(AddressError, match=error):
        parse_tox_address(address)


def test_checksum_catches_a_typo():
    text = make_id(os.urandom(32))
    flipped = text[:10] + ("0" if text[10] != "0" else "1") + text[11:]
    with pytest.raises(AddressError, match="checksum"):
        parse_tox_address(flipped + "@tox")


def test_is_tox_address():
    assert is_tox_address("x@TOX") and not is_tox_address("x@tox.example") and not is_tox_address("tox")
