"""Who may a friend send as: the verdict on the addresses a mail claims."""

from __future__ import annotations

import pytest

from toxbridge.address import tox_checksum
from toxbridge.contacts import sender_check

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


def check(envelope: str, from_: list[str], learn: bool = True) -> sender_check.Verdict:
    return sender_check.check(KEY, envelope, from_, claims, learn)


# ---------------------------------------------------------------- check


@pytest.mark.parametrize(
    "address",
    [
        f"{KEY.hex()}@tox",
        f"{KEY.hex().upper()}@TOX",
        f"{FULL_ID.hex()}@tox",
        f"{FULL_ID.hex().upper()}@Tox",
    ],
)
def test_own_tox_address_passes(address):
    verdict = check(address, [address])
    assert verdict.ok and verdict.result == sender_check.PASS
    assert "is the key itself" in verdict.reason


@pytest.mark.parametrize(
    "address",
    [
        f"{OTHER.hex()}@tox",
        f"{OTHER_ID.hex()}@tox",
        f"{KEY.hex()[:-2]}@tox",  # malformed: too short
        f"{FULL_ID.hex()[:-1]}0@tox"
        if FULL_ID.hex()[-1] != "0"
        else f"{FULL_ID.hex()[:-1]}1@tox",  # bad checksum
    ],
)
def test_another_or_malformed_tox_address_fails(address):
    for envelope, from_ in ((address, []), ("", [address]), (f"{KEY.hex()}@tox", [address])):
        verdict = check(envelope, from_)
        assert not verdict.ok and verdict.result == sender_check.FAIL
        assert "is not the sending friend's own Tox address" in verdict.reason


@pytest.mark.parametrize(
    "address, how",
    [
        ("tarek@example.org", "contact 'Tarek'"),
        ("Tarek@Example.ORG", "contact 'Tarek'"),
        ("learned@example.org", "learned pairing"),
    ],
)
def test_address_tied_to_this_key_passes(address, how):
    verdict = check(address, [address], learn=False)
    assert verdict.ok
    assert verdict.reason == f"{address.lower()} by {how}"


@pytest.mark.parametrize(
    "address, how",
    [
        ("grandma@example.org", "contact 'Grandma'"),
        ("stranger-learned@example.org", "learned pairing"),
    ],
)
def test_address_of_another_key_fails(address, how):
    for learn in (True, False):
        for envelope, from_ in (
            (address, []),
            ("tarek@example.org", [address]),
            (address, ["tarek@example.org"]),
        ):
            verdict = check(envelope, from_, learn)
            assert not verdict.ok
            assert verdict.reason == f"{address} belongs to another Tox {how}, not to the sending friend"


def test_address_of_another_key_without_how_says_contact():
    verdict = sender_check.check(KEY, "x@example.org", [], lambda a: ("", {OTHER}), True)
    assert not verdict.ok and "belongs to another Tox contact" in verdict.reason


def test_unclaimed_address_is_learned_when_allowed():
    verdict = check("New@Example.org", ["new@example.org", "other-new@example.org"], learn=True)
    assert verdict.ok
    assert verdict.reason == (
        "new@example.org first seen from this key, learned; "
        "other-new@example.org first seen from this key, learned"
    )


def test_unclaimed_address_mixed_with_tied_ones():
    verdict = check(f"{KEY.hex()}@tox", ["tarek@example.org", "new@example.org"], learn=True)
    assert verdict.ok and verdict.reason.endswith("; new@example.org first seen from this key, learned")
    assert verdict.reason.startswith(
        f"{KEY.hex()}@tox is the key itself; tarek@example.org by contact 'Tarek'; "
    )


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

    sender_check.check(
        KEY,
        "Tarek@Example.org",
        ["tarek@example.org", "TAREK@EXAMPLE.ORG", "new@example.org"],
        recording,
        True,
    )
    assert asked == ["tarek@example.org", "new@example.org"]
