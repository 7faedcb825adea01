"""The bridge's outbound side as Postfix sees it: who may send, where each recipient goes,
and one reply per recipient from the far end.

The null sender `<>` (Postfix's bounces and DSNs, Sieve's vacation replies) belongs to no user.
Such a mail leaves, per recipient, from the first user (in the config's order) whose Tox
identity is already a friend of the recipient's key: only a friend can be reached, and always
the same identity, so the receiving household binds the bounce's From: (MAILER-DAEMON@our
domain) to one key. It never sends a friend request (a bounce to a forged sender must not make
friends) and never waits for another identity to come online: that friend offline is 4.4.1."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from .address import AddressError
from .contacts.roster import WE_ASKED
from .contacts.routes import NoRoute, Route, Routes
from .mail import privacy
from .mail.smtpreply import Reply
from .tox import wire
from .tox.errors import ToxError
from .tox.identity import Identity
from .tox.outgoing import offline

log = logging.getLogger("toxbridge.bridge")

_QUEUE_ID = re.compile(rb"\bwith E?SMTPS?A? id ([0-9A-Za-z]+)")


class Outbound:
    """mail.lmtp_in.Outbox over the household's identities: what Postfix hands the LMTP listener leaves over Tox."""

    def __init__(self, identities: list[Identity], routes: Routes) -> None:
        self._identities = list(identities)  # the config's order: who sends a null-sender mail
        self._by_address = {i.user.address.lower(): i for i in identities}
        self._routes = routes
        self.in_flight = 0  # mails being carried now (for a graceful stop and status)
        self._idle = asyncio.Event()
        self._idle.set()
        self._abort = asyncio.Event()

    def _identity(self, sender: str) -> Identity | None:
        return self._by_address.get(sender.lower())

    def check_sender(self, address: str) -> Reply:
        if address == "":
            return Reply(250, "2.1.0 Ok (null sender: sent by the user whose friend the recipient is)")
        if self._identity(address) is None:
            return Reply(
                550, f"5.7.1 <{address}>: not a sender of this bridge (only its users' own addresses)"
            )
        return Reply(250, "2.1.0 Ok")

    def check_recipient(self, sender: str, address: str) -> Reply:
        if sender == "":
            return self._check_null_sender_recipient(address)
        identity = self._identity(sender)
        if identity is None:
            return Reply(503, "5.5.1 MAIL FROM first")
        try:
            route = self._routes.route(identity.user.mailbox, address)
        except AddressError as e:
            return Reply(550, f"5.1.3 <{address}>: bad Tox address: {e}")
        except NoRoute as e:
            return Reply(550, f"5.1.1 <{address}>: {e}")
        node = identity.node
        if route.public_key == node.public_key:
            return Reply(550, f"5.1.1 <{address}>: this is the sender's own Tox ID")
        friend = node.friend_by_public_key(route.public_key)
        if friend is None:
            return self._befriend(identity, address, route)
        if node.friend_connection(friend) == 0:
            return identity.offline_reply(friend, address)
        return Reply(250, "2.1.5 Ok")

    def _check_null_sender_recipient(self, address: str) -> Reply:
        picked = self._null_sender_identity(address)
        if isinstance(picked, Reply):
            return picked
        identity, friend, _ = picked
        if identity.node.friend_connection(friend) == 0:
            return identity.offline_reply(friend, address)
        return Reply(250, "2.1.5 Ok")

    def _null_sender_identity(self, address: str) -> tuple[Identity, int, bytes] | Reply:
        """The first identity whose friend `address` leads to, that friend and its key; else the refusal."""
        refusal: Reply | None = None
        for identity in self._identities:
            try:
                key = self._routes.route(identity.user.mailbox, address).public_key
            except AddressError as e:
                return Reply(550, f"5.1.3 <{address}>: bad Tox address: {e}")
            except NoRoute as e:
                refusal = refusal or Reply(550, f"5.1.1 <{address}>: {e}")
                continue
            friend = identity.node.friend_by_public_key(key) if key != identity.node.public_key else None
            if friend is not None:
                return identity, friend, key
        return refusal or Reply(
            550,
            f"5.1.1 <{address}>: no user of this household is a Tox friend of it "
            "(mail from the null sender sends no friend request)",
        )

    def _befriend(self, identity: Identity, address: str, route: Route) -> Reply:
        if route.tox_id is None:
            return Reply(
                550,
                f"5.1.1 <{address}>: not a Tox friend; write to the full 76-digit Tox ID "
                "(or give the contact its full Tox ID) to send a friend request",
            )
        try:
            identity.node.friend_add(route.tox_id, identity.friends.request_text())
        except ToxError as e:
            return offline(f"<{address}>: cannot send a Tox friend request ({e})")
        identity.save()
        if identity.friends.contact(route.public_key) is None:  # listed and removable as one
            self._routes.roster.add_accepted(identity.user.mailbox, route.public_key, WE_ASKED)
        log.info(
            "%s: sent a friend request to %s (%s)", identity.user.mailbox, route.tox_id.hex()[:8], route.via
        )
        return offline(f"<{address}>: Tox friend request sent; the mail waits until it is accepted")

    async def send(self, sender: str, recipients: list[str], message: bytes) -> list[Reply]:
        identity = self._identity(sender) if sender else next(iter(self._identities), None)
        if identity is None:  # MAIL FROM was checked; this guards against a changed config only
            return [Reply(550, "5.7.1 not a sender of this bridge")] * len(recipients)
        started = time.monotonic()
        queue_id = _queue_id(message)  # from Postfix's own Received: header, before it is stripped
        # Once, before any friend: the payload hash (the receiver's dedup key) is over these bytes.
        # (All identities share one config, so a null-sender mail is stripped alike for each.)
        stripped = privacy.strip(message, identity.config.privacy)
        if stripped.removed:
            log.debug("%s: privacy: removed %s", queue_id, stripped.summary())
        parts = stripped.parts  # the body is a view of Postfix's bytes, not a copy
        size = sum(len(part) for part in parts)
        groups: dict[tuple[str, int], list[int]] = {}  # (mailbox, friend) -> recipients' indexes
        senders: dict[str, Identity] = {}
        keys: dict[tuple[str, int], bytes] = {}  # (mailbox, friend) -> the friend's key
        replies: list[Reply | None] = [None] * len(recipients)
        peers = ["-"] * len(recipients)
        for index, rcpt in enumerate(recipients):
            picked = self._friend(identity, sender, rcpt)  # contacts may have changed since RCPT
            if isinstance(picked, Reply):
                replies[index] = picked
                continue
            sending, friend, key = picked
            peers[index] = key.hex()[:8]
            if friend is None:  # unfriended between RCPT and DATA
                replies[index] = offline("recipient is no longer a Tox friend")
            else:
                senders[sending.user.mailbox] = sending
                groups.setdefault((sending.user.mailbox, friend), []).append(index)
                keys[(sending.user.mailbox, friend)] = key
        friends = list(groups)
        outcomes = await self._unless_stopped(
            asyncio.gather(
                *(
                    self._carry(
                        senders[m],
                        f,
                        keys[m, f],
                        sender,
                        tuple(recipients[n] for n in groups[m, f]),
                        size,
                        parts,
                    )
                    for m, f in friends
                )
            ),
            [len(groups[g]) for g in friends],
        )
        for group, answer in zip(friends, outcomes, strict=False):
            for index, reply in zip(groups[group], answer, strict=False):
                replies[index] = reply
        done = [reply for reply in replies if reply is not None]
        assert len(done) == len(recipients), "every recipient has its reply by now"
        for rcpt, peer, reply in zip(recipients, peers, done, strict=True):
            status = "sent" if reply.code < 300 else "deferred" if reply.code < 500 else "bounced"
            log.info(
                "%s: to=<%s>, peer=%s, size=%d, delay=%.2f, status=%s (%s)",
                queue_id,
                rcpt,
                peer,
                size,
                time.monotonic() - started,
                status,
                reply,
            )
        return done

    async def _carry(
        self,
        identity: Identity,
        friend: int,
        key: bytes,
        sender: str,
        rcpts: tuple[str, ...],
        size: int,
        parts: tuple,
    ) -> list[Reply]:
        """To a bridge: one transfer for all its recipients; to a chat app: chat messages. A
        friend not known as either is waited for (Identity.learn_kind)."""
        if await identity.learn_kind(key):
            message = b"".join(parts)
            reply = await identity.chat_sender.send(friend, message)
            if reply.code < 300:
                identity.chat_delivered(key, message)  # the chat user's answer threads under it
            return [reply] * len(rcpts)
        return await identity.sender.send(friend, wire.Envelope(sender, rcpts, size), parts)

    def _friend(
        self, identity: Identity, sender: str, rcpt: str
    ) -> tuple[Identity, int | None, bytes] | Reply:
        """At DATA: who sends to `rcpt` and to which friend (None: no longer a friend), with its key."""
        if sender == "":
            return self._null_sender_identity(rcpt)
        try:
            key = self._routes.route(identity.user.mailbox, rcpt).public_key
        except (NoRoute, AddressError) as e:
            return Reply(550, f"5.1.1 <{rcpt}>: {e}")
        return identity, identity.node.friend_by_public_key(key), key

    async def _unless_stopped(self, work: asyncio.Future, sizes: list[int]) -> list[list[Reply]]:
        """The friends' answers, or 4xx for every recipient when the bridge is told to stop first."""
        self.in_flight += 1
        self._idle.clear()
        abort = asyncio.ensure_future(self._abort.wait())
        try:
            try:
                await asyncio.wait({work, abort}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # Postfix's session is gone (it gave up, or aiosmtpd's timeout cut it): nobody
                # waits for the answer, so the transfer stops too, and counts until it has.
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                raise
            if work.done():
                return work.result()
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return [[STOPPED] * n for n in sizes]
        finally:
            abort.cancel()
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Let mail on its way finish for up to `timeout` seconds, then answer the rest 4xx.
        Returns how many were cut short."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return 0
        except TimeoutError:
            cut = self.in_flight
            self._abort.set()
            await self._idle.wait()
            return cut


STOPPED = Reply(451, "4.3.0 toxbridge is stopping before the friend answered; Postfix will retry")


def _queue_id(message: bytes) -> str:
    """Postfix's queue id from its own Received: header at the top, for log lines."""
    match = _QUEUE_ID.search(message[:4096])
    return match.group(1).decode() if match else "NOQUEUE"
