"""Where an address leads over Tox. One answer for all who ask: Postfix (through the socketmap),
the outbound bridge (which friend gets the mail), the sender check and the catch-up.

Written contacts come first; learned pairings (roster) only fill in addresses nobody wrote down.
An address is looked up as Postfix looks up its tables: as written, then without the extension
after `recipient_delimiter` (tarek+news@ is tarek@'s); the mail itself keeps the address as
written.

A learned pairing is the household's: the address is the friend's, whoever learned it. A user
who has no pairing of their own uses it when their own identity reaches that key (`reaches`).
Postfix asks the transport without the sender, so the route cannot differ per user: an address
only learned goes to the bridge when every user's identity reaches its key, and otherwise takes
the ordinary route for all, as before anyone learned it; mail never reaches the bridge only to
bounce for one user (issue 15).

No friend ever claims (so learns) an address of the household's own domains (the domains of
its users' addresses), nor one the socketmap told Postfix to route the ordinary way (the
household mailed it, or at MAIL FROM it mailed the household, without Tox): trust on first use
would hand it the household's later mail (issue 15.4). Limits: Postfix asks senders too, so an
outsider who mails the household first, with the address a friend would later claim, keeps
that friend from learning it (a contacts entry still ties it); mail that never passed this
Postfix is not known; the record holds the ORDINARY_CAP latest addresses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..address import AddressError, is_tox_address, parse_tox_address
from ..config import Config
from .book import Contact, ContactBook, normalise_address, strip_extension
from .roster import Roster
from .sender_check import NOT_A_FRIENDS


@dataclass(frozen=True)
class Route:
    public_key: bytes
    tox_id: bytes | None  # known full ID: a friend request can be sent
    via: str  # how the address is known, for replies and logs


OWN_USER = NOT_A_FRIENDS  # stands for "tied to one of our own identities"


class NoRoute(LookupError):
    """The address does not lead to a Tox friend of this user; the text says why."""


class Routes:
    def __init__(
        self,
        book: ContactBook,
        roster: Roster,
        own_addresses: tuple[str, ...] = (),
        *,
        mailboxes: tuple[str, ...] = (),
        recipient_delimiter: str = "+",
    ) -> None:
        self.book = book  # replaced whole when the contacts file changes
        self.roster = roster
        # The bridge users' own addresses: never a friend's, never routed to Tox, never learned.
        self.own = {normalise_address(a) for a in own_addresses}
        self.own_domains = {a.rpartition("@")[2] for a in self.own}
        self.mailboxes = tuple(mailboxes)  # every user: the transport must suit each of them
        self.delimiter = recipient_delimiter  # Postfix's recipient_delimiter (any one character)
        # Does this user's identity reach this key? The daemon sets it to "is a friend of the
        # user's Tox node"; without nodes (`toxbridge routes`, which answers Postfix, and the CLI)
        # the records say: a contact with that key serves the user, the user learned a pairing
        # with it (the key mailed them), or the user's identity accepted its friend request.
        self.reaches: Callable[[str, bytes], bool] = self._reaches_by_records

    @classmethod
    def of(cls, config: Config, book: ContactBook, roster: Roster) -> Routes:
        return cls(
            book,
            roster,
            tuple(u.address for u in config.users),
            mailboxes=config.mailboxes,
            recipient_delimiter=config.recipient_delimiter,
        )

    def _keys(self, address: str) -> tuple[str, ...]:
        """What is looked up, in Postfix's order: the address as written, then without its extension."""
        address = normalise_address(address)
        base = strip_extension(address, self.delimiter)
        return (address,) if base == address else (address, base)

    def _own(self, address: str) -> bool:
        return any(k in self.own for k in self._keys(address))

    def _own_domain(self, address: str) -> bool:
        return normalise_address(address).rpartition("@")[2] in self.own_domains

    def _ordinary(self, address: str) -> bool:
        return any(self.roster.is_ordinary(k) for k in self._keys(address))

    def _contact(self, address: str) -> Contact | None:
        return next((c for k in self._keys(address) if (c := self.book.owner(k)) is not None), None)

    def _reaches_by_records(self, mailbox: str, public_key: bytes) -> bool:
        return (
            any(c.serves(mailbox) for c in self.book.with_key(public_key))
            or self.roster.has_key(mailbox, public_key)
            or self.roster.has_accepted(mailbox, public_key)
        )

    def _learned(self, mailbox: str, address: str) -> Route | None:
        """The user's own pairing, else the household's first if the user's identity reaches it."""
        for k in self._keys(address):
            key = self.roster.learned_key(mailbox, k)
            if key is not None:
                return Route(key, None, "learned pairing")
            first = self.roster.first_learned(k)
            if first is not None:
                by, key = first
                return Route(key, None, f"learned pairing (by {by})") if self.reaches(mailbox, key) else None
        return None

    def route(self, mailbox: str, address: str) -> Route:
        """The friend `address` leads to for this user. Raises AddressError for a malformed
        @tox address, NoRoute for an address that leads nowhere."""
        if is_tox_address(address):
            target = parse_tox_address(address)
            return Route(target.public_key, target.tox_id, "Tox address")
        if self._own(address):
            raise NoRoute("an address of this household, not of a Tox friend")
        contact = self._contact(address)
        if contact is not None:
            if not contact.serves(mailbox):
                raise NoRoute(
                    f"contact {contact.name!r} serves only {', '.join(contact.users)} in this household"
                )
            return Route(contact.public_key, contact.tox_id, f"contact {contact.name!r}")
        route = self._learned(mailbox, address)
        if route is not None:
            return route
        raise NoRoute("not a Tox contact of this household (add it: toxbridge contacts add)")

    def household(self, address: str) -> bool:
        """An address of this household itself: a user's, or one of its users' domains."""
        return self._own(address) or self._own_domain(address)

    def transport(self, address: str) -> bool:
        """Does Postfix hand mail for this recipient to the bridge? A written contact and @tox: yes
        (a contact that does not serve the sender is refused by the bridge, on purpose); an address
        only learned: when it leads somewhere for every user, whoever sends."""
        if "@" not in address or self._own(address):  # `*`, or our own users
            return False
        if is_tox_address(address) or self._contact(address) is not None:
            return True
        if not any(self.roster.keys_of(k) for k in self._keys(address)):
            return False
        return all(self._learned(m, address) is not None for m in self.mailboxes)

    def postfix_asks(self, address: str) -> bool:
        """transport() for the socketmap: Postfix asks it for every recipient and, at MAIL FROM,
        every sender. An address it routes the ordinary way is recorded: no friend may claim it."""
        over_tox = self.transport(address)
        if not over_tox and "@" in address and not is_tox_address(address) and not self._own_domain(address):
            self.roster.note_ordinary(normalise_address(address))
        return over_tox

    def claims(self, address: str) -> tuple[str, set[bytes]]:
        """Which keys an ordinary address is tied to, and how (for sender_check.check)."""
        if self._own(address):
            return "a user of this household", {OWN_USER}
        contact = self._contact(address)
        if contact is not None:
            return f"contact {contact.name!r}", {contact.public_key}
        for k in self._keys(address):
            keys = self.roster.keys_of(k)
            if keys:
                return "learned pairing", keys
        if self._own_domain(address):
            return "an address of this household's own domains", {NOT_A_FRIENDS}
        if self._ordinary(address):
            return "mailed by this household by the ordinary route", {NOT_A_FRIENDS}
        return "", set()

    def learn(self, mailbox: str, address: str, public_key: bytes) -> bool:
        if self._own(address) or self._contact(address) is not None:  # never over what someone wrote
            return False
        if self._own_domain(address) or self._ordinary(address):  # never the household's (15.4)
            return False
        return self.roster.learn(mailbox, normalise_address(address), public_key)

    def recipient_matcher(self, mailbox: str, public_key: bytes):
        """A test: does a recipient address lead to this friend for this user?"""

        def matches(address: str) -> bool:
            try:
                return self.route(mailbox, address).public_key == public_key
            except (NoRoute, AddressError):
                return False

        return matches
