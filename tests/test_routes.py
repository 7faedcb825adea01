"""Where an address leads over Tox: contacts first, learned pairings per mailbox, @tox directly."""

from __future__ import annotations

from typing import cast

import pytest

from toxbridge.address import AddressError, tox_checksum
from toxbridge.contacts import book as contacts
from toxbridge.contacts.book import ContactBook
from toxbridge.contacts.routes import OWN_USER, NoRoute, Route, Routes
from toxbridge.mail.headers import scan
from toxbridge.tox import wire

MAILBOXES = ("mom", "dad")
NOSPAM = b"\x01\x02\x03\x04"


def full_id(byte: int) -> bytes:
    key = bytes([byte]) * 32
    return key + NOSPAM + tox_checksum(key + NOSPAM)


ID_A, ID_B, ID_C = full_id(0xA1), full_id(0xB2), full_id(0xC3)
KEY_A, KEY_B, KEY_C = ID_A[:32], ID_B[:32], ID_C[:32]

BOOK = f"""\
- name: Tarek
  addresses: [tarek@example.org]
  tox_id: {ID_A.hex()}
  users: [mom]
- name: Grandma
  addresses: [granny@example.org, Gran@Example.net]
  tox_id: {KEY_B.hex()}
"""


@pytest.fixture
def routes(roster) -> Routes:
    return Routes(contacts.parse(BOOK, "contacts.yaml", MAILBOXES), roster, mailboxes=MAILBOXES)


# ---------------------------------------------------------------- route


@pytest.mark.parametrize(
    "address, route",
    [
        (f"{ID_C.hex()}@tox", Route(KEY_C, ID_C, "Tox address")),
        (f"{ID_C.hex().upper()}@TOX", Route(KEY_C, ID_C, "Tox address")),
        (f"{KEY_C.hex()}@tox", Route(KEY_C, None, "Tox address")),
        (f"{KEY_A.hex()}@tox", Route(KEY_A, None, "Tox address")),  # a contact's key: still by address
    ],
)
def test_route_tox_addresses_for_anyone(routes, address, route):
    assert routes.route("mom", address) == route
    assert routes.route("dad", address) == route


@pytest.mark.parametrize(
    "address",
    [
        "abc@tox",
        f"{KEY_C.hex()[:-1]}@tox",
        "z" * 64 + "@tox",
        f"{ID_C.hex()[:-1]}{'0' if ID_C.hex()[-1] != '0' else '1'}@tox",  # checksum
        "@tox",
    ],
)
def test_route_malformed_tox_address(routes, address):
    with pytest.raises(AddressError):
        routes.route("mom", address)


def test_route_contact(routes):
    assert routes.route("mom", "Tarek@Example.ORG") == Route(KEY_A, ID_A, "contact 'Tarek'")
    assert routes.route("dad", "gran@example.net") == Route(KEY_B, None, "contact 'Grandma'")
    assert routes.route("mom", "granny@example.org") == Route(KEY_B, None, "contact 'Grandma'")


def test_route_contact_not_serving_the_mailbox(routes):
    with pytest.raises(NoRoute) as caught:
        routes.route("dad", "tarek@example.org")
    assert str(caught.value) == "contact 'Tarek' serves only mom in this household"


def test_route_learned_pairing_for_a_user_who_does_not_reach_its_key(routes, roster):
    assert roster.learn("dad", "Pal@Example.org", KEY_C)
    assert routes.route("dad", "pal@example.org") == Route(KEY_C, None, "learned pairing")
    assert routes.route("dad", "PAL@EXAMPLE.ORG").public_key == KEY_C
    with pytest.raises(NoRoute, match="not a Tox contact of this household"):
        routes.route("mom", "pal@example.org")  # mom's identity is no friend of KEY_C


def test_a_pairing_one_user_learned_routes_another_whose_identity_reaches_the_key(routes, roster):
    """Issue 15.5: the pairing is the household's; dad's mail goes from dad's own identity."""
    roster.learn("mom", "tarek@work.example", KEY_C)
    routes.reaches = lambda mailbox, key: key == KEY_C  # both identities are friends of KEY_C
    assert routes.route("dad", "Tarek@Work.example") == Route(KEY_C, None, "learned pairing (by mom)")
    assert routes.transport("tarek@work.example") is True


def test_a_pairing_one_user_learned_takes_the_ordinary_route_when_another_cannot_reach_it(routes, roster):
    """Issue 15.5: Postfix asks without the sender, so an address that one user's identity cannot
    reach takes the ordinary route for all; the bridge never gets dad's mail only to bounce it."""
    roster.learn("mom", "tarek@work.example", KEY_C)
    assert routes.transport("tarek@work.example") is False  # dad's identity is no friend of KEY_C
    with pytest.raises(NoRoute):
        routes.route("dad", "tarek@work.example")
    roster.learn("dad", "tarek@work.example", KEY_C)  # KEY_C mailed dad from it too
    assert routes.transport("tarek@work.example") is True


def test_without_the_daemon_a_contact_or_an_own_pairing_with_the_key_reaches_it(routes, roster):
    roster.learn("mom", "tarek@work.example", KEY_A)  # Tarek's key; his contact serves only mom
    assert routes.route("mom", "tarek@work.example").public_key == KEY_A
    with pytest.raises(NoRoute):
        routes.route("dad", "tarek@work.example")
    roster.learn("dad", "tarek@home.example", KEY_A)  # Tarek mailed dad from another address
    assert routes.route("dad", "tarek@work.example") == Route(KEY_A, None, "learned pairing (by mom)")
    roster.learn("mom", "gran@work.example", KEY_B)  # Grandma's contact serves everyone
    assert routes.route("dad", "gran@work.example").public_key == KEY_B


def test_without_the_daemon_an_accepted_strangers_key_reaches_the_user_who_accepted_it(routes, roster):
    """`toxbridge routes` has no Tox node: a stranger whose request dad's identity accepted is
    dad's friend by the records, so the pairing mom learned of it routes for dad too."""
    roster.learn("mom", "pal@example.org", KEY_C)
    assert routes.transport("pal@example.org") is False  # dad's identity does not reach KEY_C
    roster.add_accepted("dad", KEY_C, "hi")
    assert routes.route("dad", "pal@example.org") == Route(KEY_C, None, "learned pairing (by mom)")
    assert routes.transport("pal@example.org") is True
    roster.end_friendship("dad", KEY_C)  # `contacts remove`: no longer a friend by the records
    assert routes.transport("pal@example.org") is False


def test_the_first_pairing_of_the_household_wins_for_users_without_their_own(routes, roster):
    routes.reaches = lambda mailbox, key: True
    roster.learn("mom", "pal@example.org", KEY_C)
    roster.learn("kid", "pal@example.org", KEY_A)  # a later, different key (a race of two friends)
    assert routes.route("kid", "pal@example.org").public_key == KEY_A  # its own
    assert routes.route("dad", "pal@example.org").public_key == KEY_C  # the household's first


def test_route_unknown_address(routes):
    for address in ("nobody@example.org", "tarek@example.org.evil", "tox@example.org"):
        with pytest.raises(NoRoute) as caught:
            routes.route("mom", address)
        assert "toxbridge contacts add" in str(caught.value)


def test_route_contact_wins_over_a_learned_pairing(routes, roster):
    roster.learn("mom", "tarek@example.org", KEY_C)  # made before the contact was written
    roster.learn("dad", "tarek@example.org", KEY_C)
    assert routes.route("mom", "tarek@example.org").public_key == KEY_A
    with pytest.raises(NoRoute, match="serves only mom"):  # not the learned key either
        routes.route("dad", "tarek@example.org")


def test_route_follows_a_replaced_book(routes):
    routes.book = contacts.parse("", "contacts.yaml", MAILBOXES)
    with pytest.raises(NoRoute):
        routes.route("mom", "tarek@example.org")


def test_noroute_is_a_lookup_error():
    assert issubclass(NoRoute, LookupError)


# ---------------------------------------------------------------- transport


@pytest.mark.parametrize("key", ["*", "", "tarek", "example.org", "<>", f"{KEY_C.hex()}"])
def test_transport_false_for_non_addresses(routes, key):
    assert routes.transport(key) is False


@pytest.mark.parametrize(
    "address",
    [
        "tarek@example.org",
        "TAREK@example.org",  # serves only mom: still the bridge's
        "granny@example.org",
        "GRAN@example.NET",
        f"{ID_C.hex()}@tox",
        f"{KEY_C.hex().upper()}@TOX",
        "junk@tox",  # malformed @tox goes to the bridge, which says what is wrong
    ],
)
def test_transport_true_for_contacts_and_tox(routes, address):
    assert routes.transport(address) is True


def test_transport_learned_by_any_mailbox_that_every_user_reaches(routes, roster):
    routes.reaches = lambda mailbox, key: True
    assert routes.transport("pal@example.org") is False
    roster.learn("dad", "pal@example.org", KEY_C)
    assert routes.transport("Pal@Example.org") is True
    roster.forget("pal@example.org")
    assert routes.transport("pal@example.org") is False


def test_transport_false_for_unknown(routes):
    assert routes.transport("nobody@example.org") is False
    assert routes.transport("tarek@example.org.evil") is False


# ---------------------------------------------------------------- +extension (issue 15.7)


@pytest.mark.parametrize(
    "address, delimiter, base",
    [
        ("tarek+x@example.org", "+", "tarek@example.org"),
        ("tarek+x+y@example.org", "+", "tarek@example.org"),  # at the first delimiter, as Postfix
        ("tarek@example.org", "+", "tarek@example.org"),
        ("tarek-x@example.org", "+", "tarek-x@example.org"),
        ("tarek-x@example.org", "+-", "tarek@example.org"),  # any one of the characters
        ("tarek+x@example.org", "-", "tarek+x@example.org"),
        ("+x@example.org", "+", "+x@example.org"),  # never an empty local part
        ("tarek+@example.org", "+", "tarek@example.org"),
        ("postmaster+x@example.org", "+", "postmaster@example.org"),
        ("MAILER-DAEMON@example.org", "-", "MAILER-DAEMON@example.org"),  # Postfix never splits these
        ("double-bounce@example.org", "-", "double-bounce@example.org"),
        ("owner-list@example.org", "-", "owner-list@example.org"),  # owner_request_special
        ("list-request@example.org", "-", "list-request@example.org"),
        ("a-b-request@example.org", "+", "a-b-request@example.org"),
        ('"a+b"@example.org', "+", '"a@example.org'),  # Postfix splits the bare text too
        ("a+b@c+d@example.org", "+", "a@example.org"),  # the local part ends at the last @
        ("no-at-sign+x", "+", "no-at-sign+x"),
    ],
)
def test_strip_extension(address, delimiter, base):
    assert contacts.strip_extension(address, delimiter) == base


def test_an_extension_of_a_contacts_address_leads_to_the_contact(routes):
    assert routes.route("mom", "Tarek+News@example.org") == Route(KEY_A, ID_A, "contact 'Tarek'")
    assert routes.transport("tarek+news@example.org") is True
    assert routes.transport("granny+x+y@example.org") is True
    assert routes.claims("tarek+x@example.org") == ("contact 'Tarek'", {KEY_A})
    assert routes.learn("mom", "tarek+x@example.org", KEY_C) is False  # written down, extension or not
    assert routes.transport("tarek-news@example.org") is False  # not the delimiter


def test_an_extension_of_a_learned_address_leads_to_the_pairing(routes, roster):
    roster.learn("dad", "pal@example.org", KEY_C)
    assert routes.route("dad", "pal+x@example.org") == Route(KEY_C, None, "learned pairing")
    assert routes.claims("pal+x@example.org") == ("learned pairing", {KEY_C})
    routes.reaches = lambda mailbox, key: True
    assert routes.transport("PAL+x@example.org") is True


def test_the_address_as_written_comes_before_its_extension_is_stripped(roster):
    book = contacts.parse(
        f"- {{name: A, addresses: [a@example.org], tox_id: {ID_A.hex()}}}\n"
        f"- {{name: B, addresses: [a+b@example.org], tox_id: {ID_B.hex()}}}\n",
        "contacts.yaml",
        MAILBOXES,
    )
    routes = Routes(book, roster, mailboxes=MAILBOXES)
    assert routes.route("mom", "a+b@example.org").public_key == KEY_B
    assert routes.route("mom", "a+c@example.org").public_key == KEY_A


def test_the_delimiter_is_the_configured_one(roster):
    routes = Routes(
        contacts.parse(BOOK, "contacts.yaml", MAILBOXES), roster, mailboxes=MAILBOXES, recipient_delimiter="-"
    )
    assert routes.transport("tarek-x@example.org") is True
    assert routes.transport("tarek+x@example.org") is False


def test_an_extension_of_a_users_own_address_is_the_users(roster):
    routes = Routes(ContactBook(), roster, ("mom@home.example",), mailboxes=("mom",))
    assert routes.transport("mom+x@home.example") is False
    assert routes.claims("Mom+x@home.example") == ("a user of this household", {OWN_USER})
    assert routes.learn("mom", "mom+x@home.example", KEY_C) is False
    with pytest.raises(NoRoute, match="an address of this household"):
        routes.route("mom", "mom+x@home.example")


# ---------------------------------------------------------------- claims, learn


def test_claims(routes, roster):
    assert routes.claims("Tarek@example.org") == ("contact 'Tarek'", {KEY_A})
    assert routes.claims("gran@example.net") == ("contact 'Grandma'", {KEY_B})
    assert routes.claims("nobody@example.org") == ("", set())
    roster.learn("mom", "pal@example.org", KEY_C)
    roster.learn("dad", "pal@example.org", KEY_A)
    assert routes.claims("PAL@example.org") == ("learned pairing", {KEY_C, KEY_A})


def test_claims_contact_hides_learned_keys(routes, roster):
    roster.learn("mom", "tarek@example.org", KEY_C)
    assert routes.claims("tarek@example.org") == ("contact 'Tarek'", {KEY_A})


def test_learn_never_overrides_a_written_contact(routes, roster):
    for mailbox in ("mom", "dad"):  # dad is not served by Tarek: still written down
        assert routes.learn(mailbox, "tarek@example.org", KEY_C) is False
        assert routes.learn(mailbox, "TAREK@EXAMPLE.ORG", KEY_C) is False
    assert roster.keys_of("tarek@example.org") == set()
    assert roster.learned() == []


def test_learn_new_address_once(routes, roster):
    assert routes.learn("mom", "Pal@Example.org", KEY_C) is True
    assert routes.learn("mom", "pal@example.org", KEY_C) is False  # already known
    assert routes.learn("mom", "pal@example.org", KEY_A) is False  # a second key does not replace it
    assert roster.learned_key("mom", "pal@example.org") == KEY_C
    assert routes.route("mom", "pal@example.org").public_key == KEY_C
    assert [(e.mailbox, e.address, e.public_key) for e in roster.learned()] == [
        ("mom", "pal@example.org", KEY_C)
    ]


# ---------------------------------------------------------------- recipient_matcher


def test_recipient_matcher(routes, roster):
    roster.learn("dad", "pal@example.org", KEY_C)
    to_tarek_for_mom = routes.recipient_matcher("mom", KEY_A)
    assert to_tarek_for_mom("tarek@example.org")
    assert to_tarek_for_mom(f"{ID_A.hex()}@tox")
    assert to_tarek_for_mom(f"{KEY_A.hex()}@tox")
    assert not to_tarek_for_mom("granny@example.org")  # another contact
    assert not to_tarek_for_mom("nobody@example.org")  # NoRoute
    assert not to_tarek_for_mom("junk@tox")  # AddressError
    assert not routes.recipient_matcher("dad", KEY_A)("tarek@example.org")  # not served
    assert routes.recipient_matcher("dad", KEY_C)("pal@example.org")
    assert not routes.recipient_matcher("mom", KEY_C)("pal@example.org")  # mom does not reach KEY_C
    routes.reaches = lambda mailbox, key: True
    assert routes.recipient_matcher("mom", KEY_C)("pal@example.org")  # the household's pairing


def bobs_friends(routes: Routes):
    """bob's Friends (the sender vetting) over `routes`; config and node are stand-ins: vet()
    reads config.learn_senders, never the node."""
    from types import SimpleNamespace

    from toxbridge.config import Config, User
    from toxbridge.tox.friends import Friends
    from toxbridge.tox.node import ToxNode

    config = cast(Config, SimpleNamespace(learn_senders=True))
    return Friends(config, User("bob", "bob@bob.test"), cast(ToxNode, None), routes, lambda: None)


def test_a_pairing_another_local_identity_learned_is_learned_for_this_one_too(roster):
    """bob and ghost share a household; alice's mail reached ghost first. bob's reply to alice
    still needs bob's own pairing (seen as a race in the full suite)."""
    from types import SimpleNamespace

    from toxbridge.config import Config

    alice_key = b"\x05" * 32
    routes = Routes(ContactBook(), roster, ("bob@bob.test",))
    routes.learn("ghost", "alice@alice.test", alice_key)
    bob = bobs_friends(routes)
    envelope = wire.Envelope("alice@alice.test", ("bob@bob.test",), 10)
    assert bob.vet(alice_key, envelope, scan(b"From: Alice <alice@alice.test>\r\n")).ok
    assert routes.route("bob", "alice@alice.test").public_key == alice_key
    bob.config = cast(Config, SimpleNamespace(learn_senders=False))  # off: nothing is learned, for nobody
    envelope = wire.Envelope("alice2@alice.test", ("bob@bob.test",), 10)
    assert (
        not bob.vet(alice_key, envelope, scan(b"")).ok
        and roster.learned_key("bob", "alice2@alice.test") is None
    )


def test_a_header_longer_than_what_was_read_fails_and_nothing_is_learned(roster):
    """What lies beyond the bytes read is not seen, so not judged: Dovecot would show it."""
    bob = bobs_friends(Routes(ContactBook(), roster, ("bob@bob.test",)))
    head = b"From: alice@alice.test\r\nX-Padding: " + b"x" * 2000  # no end of the header in sight
    verdict = bob.vet(
        b"\x05" * 32, wire.Envelope("alice@alice.test", ("bob@bob.test",), len(head) + 5000), scan(head)
    )
    assert not verdict.ok and "longer than the 1 KiB the bridge reads" in verdict.reason
    assert roster.learned_key("bob", "alice@alice.test") is None
    whole = bob.vet(b"\x05" * 32, wire.Envelope("alice@alice.test", ("bob@bob.test",), len(head)), scan(head))
    assert whole.ok  # all of the mail was read: a header without a body is whole
