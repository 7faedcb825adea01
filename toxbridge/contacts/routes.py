"""Where an address leads over Tox. One answer for all who ask: Postfix (through the socketmap),
the outbound bridge (which friend gets the mail), the sender check and the catch-up.

Written contacts come first; learned pairings (roster) only fill in addresses nobody wrote down.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..address import AddressError, is_tox_address, parse_tox_address
from .book import ContactBook, normalise_address
from .roster import Roster


@dataclass(frozen=True)
class Route:
    public_key: bytes
    tox_id: bytes | None  # known full ID: a friend request can be sent
    via: str  # how the address is known, for replies and logs


OWN_USER = b""  # stands for "tied to one of our own identities" (no friend's key is empty)


class NoRoute(LookupError):
    """The address does not lead to a Tox friend of this user; the text says why."""


class Routes:
    def __init__(self, book: ContactBook, roster: Roster, own_addresses: tuple[str, ...] = ()) -> None:
        self.book = book  # replaced whole when the contacts file changes
        self.roster = roster
        # The bridge users' own addresses: never a friend's, never routed to Tox, never learned.
        self.own = {normalise_address(a) for a in own_addresses}

    def route(self, mailbox: str, address: str) -> Route:
        """The friend `address` leads to for this user. Raises AddressError for a malformed
        @tox address, NoRoute for an address that leads nowhere."""
        if is_tox_address(address):
            target = parse_tox_address(address)
            return Route(target.public_key, target.tox_id, "Tox address")
        if normalise_address(address) in self.own:
            raise NoRoute("an address of this household, not of a Tox friend")
        contact = self.book.owner(address)
        if contact is not None:
            if not contact.serves(mailbox):
                raise NoRoute(
                    f"contact {contact.name!r} serves only {', '.join(contact.users)} in this household"
                )
            return Route(contact.public_key, contact.tox_id, f"contact {contact.name!r}")
        key = self.roster.learned_key(mailbox, address)
        if key is not None:
            return Route(key, None, "learned pairing")
        raise NoRoute("not a Tox contact of this household (add it: toxbridge contacts add)")

    def transport(self, address: str) -> bool:
        """Does Postfix hand mail for this recipient to the bridge? (any user's contact counts)"""
        if "@" not in address or normalise_address(address) in self.own:  # `*`, or our own users
            return False
        return (
            is_tox_address(address)
            or self.book.owner(address) is not None
            or bool(self.roster.keys_of(address))
        )

    def claims(self, address: str) -> tuple[str, set[bytes]]:
        """Which keys an ordinary address is tied to, and how (for sender_check.check)."""
        if normalise_address(address) in self.own:
            return "user of this household", {OWN_USER}
        contact = self.book.owner(address)
        if contact is not None:
            return f"contact {contact.name!r}", {contact.public_key}
        keys = self.roster.keys_of(address)
        return ("learned pairing" if keys else ""), keys

    def learn(self, mailbox: str, address: str, public_key: bytes) -> bool:
        address = normalise_address(address)
        if address in self.own or self.book.owner(address) is not None:  # never over what someone wrote
            return False
        return self.roster.learn(mailbox, address, public_key)

    def recipient_matcher(self, mailbox: str, public_key: bytes):
        """A test: does a recipient address lead to this friend for this user?"""

        def matches(address: str) -> bool:
            try:
                return self.route(mailbox, address).public_key == public_key
            except (NoRoute, AddressError):
                return False

        return matches
