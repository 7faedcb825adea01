"""Who may reach one mailbox over Tox, and as whom.

The contacts that serve the mailbox become its Tox friends; a stranger's friend request is
accepted, kept pending or ignored, as tox.friend_requests says; a friend's mail may claim only
the sender addresses tied to its key (contacts.sender_check), and addresses nobody claims are
learned for it when learn_senders is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..address import is_tox_address
from ..config import Config, User
from ..contacts.book import Contact
from ..contacts.peer_text import MAX_STORED, printable
from ..contacts.roster import FROM_BEFORE
from ..contacts.routes import Routes
from ..contacts.sender_check import FAIL, Verdict, check
from ..mail.headers import Header, from_addresses, sender_defect
from .errors import ToxError
from .node import ToxNode
from .wire import Envelope

log = logging.getLogger("toxbridge.identity")  # the identity's log lines, as before it was split

# Strangers' friend requests logged one by one, per identity: at most this many a window.
REQUEST_LOG_BURST = 5
REQUEST_LOG_WINDOW = 60.0


class LogBudget:
    """A line per stranger's request, at most REQUEST_LOG_BURST per REQUEST_LOG_WINDOW seconds
    (anyone on Tox can send requests as fast as they like); the rest are counted and the count
    is said when the next window opens with a request."""

    def __init__(self, mailbox: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.mailbox, self._clock = mailbox, clock
        self._start, self._used, self._held = clock(), 0, 0

    def spend(self) -> bool:
        """May this request have its log line?"""
        now = self._clock()
        if now - self._start >= REQUEST_LOG_WINDOW:
            if self._held:
                log.info(
                    "%s: %d more friend requests from strangers came in %.0f s, not logged one by one",
                    self.mailbox,
                    self._held,
                    now - self._start,
                )
            self._start, self._used, self._held = now, 0, 0
        if self._used < REQUEST_LOG_BURST:
            self._used += 1
            return True
        if not self._held:
            log.warning(
                "%s: more than %d friend requests from strangers in %.0f s; the rest are counted, "
                "not logged (`toxbridge contacts pending` lists those kept)",
                self.mailbox,
                REQUEST_LOG_BURST,
                REQUEST_LOG_WINDOW,
            )
        self._held += 1
        return False


class Friends:
    """One identity's friends: made from contacts, requested by strangers, vetted as senders."""

    def __init__(
        self, config: Config, user: User, node: ToxNode, routes: Routes, save: Callable[[], None]
    ) -> None:
        self.config, self.user, self.node, self.routes = config, user, node, routes
        self._save = save  # the profile keeps the friend list
        self._log_budget = LogBudget(user.mailbox)

    def request_text(self) -> bytes:
        """What a friend request from this identity says: who is asking, from which household."""
        return f"{self.user.address} asks to exchange mail over Tox (toxbridge at {self.config.hostname})".encode()

    def contact(self, public_key: bytes) -> Contact | None:
        """The contact with this key that serves this mailbox, if any."""
        return next((c for c in self.routes.book.with_key(public_key) if c.serves(self.user.mailbox)), None)

    def follow_contacts(self) -> None:
        """Make every contact that serves this user a Tox friend: a friend request when the full
        Tox ID is known, else a friend without request (their side must list us too)."""
        changed = False
        for contact in self.routes.book.for_user(self.user.mailbox):
            if (
                contact.public_key == self.node.public_key
                or self.node.friend_by_public_key(contact.public_key) is not None
            ):
                continue
            try:
                if contact.tox_id is not None:
                    self.node.friend_add(contact.tox_id, self.request_text())
                else:
                    self.node.friend_add_norequest(contact.public_key)
            except ToxError as e:
                log.warning("%s: cannot make contact %r a Tox friend: %s", self.user.mailbox, contact.name, e)
                continue
            changed = True
            self.routes.roster.drop_pending(self.user.mailbox, contact.public_key)
            log.info(
                "%s: contact %r (%s) is now a Tox friend%s",
                self.user.mailbox,
                contact.name,
                contact.public_key.hex()[:8],
                ", request sent" if contact.tox_id else "",
            )
        if changed:
            self._save()

    def record_friends(self) -> None:
        """Every Tox friend of the profile that is no contact goes into the roster, so that
        `contacts list` shows it and `contacts remove` can end it: friends made before the
        roster recorded them (an older version, or by hand)."""
        roster, mailbox = self.routes.roster, self.user.mailbox
        for friend in self.node.friends():
            key = self.node.friend_public_key(friend)
            if self.contact(key) is None and not roster.has_accepted(mailbox, key):
                roster.add_accepted(mailbox, key, FROM_BEFORE)
                log.info(
                    "%s: recorded Tox friend %s (no contact) for `contacts list`", mailbox, key.hex()[:8]
                )

    def on_request(self, public_key: bytes, message: bytes) -> None:
        """A friend request: a contact's is accepted, a stranger's as tox.friend_requests says."""
        text = message.decode("utf-8", "replace")[:MAX_STORED]
        contact = self.contact(public_key)
        policy = "accept" if contact else self.config.tox.friend_requests
        if policy == "accept":
            try:
                self.node.friend_add_norequest(public_key)
            except ToxError as e:
                log.warning(
                    "%s: cannot accept friend request from %s: %s", self.user.mailbox, public_key.hex()[:8], e
                )
                return
            self._save()
            self.routes.roster.drop_pending(self.user.mailbox, public_key)
            if contact is None:
                self.routes.roster.add_accepted(self.user.mailbox, public_key, text)
                if not self._log_budget.spend():
                    return
            who = f"contact {contact.name!r}" if contact else "a stranger (friend_requests: accept)"
            log.info(
                "%s: accepted friend request from %s, %s (%s)",
                self.user.mailbox,
                public_key.hex(),
                who,
                printable(text),
            )
            return
        if policy == "pending":
            self.routes.roster.add_pending(self.user.mailbox, public_key, text)
            line = "%s: friend request from %s (%s) is pending; see `toxbridge contacts pending`"
        else:
            line = "%s: ignored friend request from %s (%s); friend_requests is 'ignore'"
        if self._log_budget.spend():
            log.info(line, self.user.mailbox, public_key.hex(), printable(text))

    def vet(self, public_key: bytes, envelope: Envelope, header: Header) -> Verdict:
        """May this friend send as the addresses the mail claims? Learns them for this mailbox:
        unclaimed ones, and those another local identity learned for the same key (pairings are
        kept per mailbox: without its own, this user's reply would find no route). A header
        that goes on beyond the bytes read (`header.data`) cannot be judged: it fails, and so does one
        without exactly one well-formed From field (mail.headers.sender_defect)."""
        if not header.complete and len(header.data) < envelope.size:
            return Verdict(
                FAIL, f"the header is longer than the {len(header.data) // 1024} KiB the bridge reads"
            )
        defect = sender_defect(header)  # exactly one From, read alike by every reader (issue 15.1)
        if defect:
            return Verdict(FAIL, defect)
        from_header = from_addresses(header)
        verdict = check(
            public_key, envelope.sender, from_header, self.routes.claims, self.config.learn_senders
        )
        if not (verdict.ok and self.config.learn_senders):
            return verdict
        for address in dict.fromkeys(
            a.lower() for a in [envelope.sender, *from_header] if a and not is_tox_address(a)
        ):
            if self.routes.learn(self.user.mailbox, address, public_key):
                log.info(
                    "%s: learned %s -> Tox key %s; replies to it go over Tox",
                    self.user.mailbox,
                    address,
                    public_key.hex()[:8],
                )
        return verdict
