"""One local user's Tox identity: its toxcore node and profile, and where each of the node's
events goes: to its friends (who may reach the user, and as whom), its outgoing and incoming
transfers, and the catch-up of mail Postfix deferred for a friend that came online."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from ..config import Config, User
from ..contacts.routes import Routes
from ..files import state_subdir
from ..mail import headers, lmtp_out
from ..mail.smtpreply import Reply
from . import profile, wire
from .catchup import CatchUp
from .chat_files import ChatFiles
from .chat_offers import FileOffers
from .chat_out import ChatSender, chat_unreachable
from .chat_store import ChatStore
from .chats import Chats
from .delivered import DeliveryStore
from .errors import ToxError, ToxPortError
from .friend_search import FriendSearch
from .friends import Friends
from .incoming import Receiver
from .last_seen import LastSeen, seen_path
from .library import (
    FILE_KIND_AVATAR,
    FILE_KIND_DATA,
    MAX_MESSAGE_LENGTH,
    MESSAGE_ACTION,
)
from .node import ToxNode
from .outgoing import Sender, offline
from .pacing import Pacer
from .partial import Partials

log = logging.getLogger("toxbridge.identity")

SOFTWARE = "toxbridge"
# A friend online this long without greeting us is a plain chat app, not a bridge (a bridge
# greets at once when the link comes up, within a second on loopback). Long, since a bridge
# taken for a chat app would get mail as chat messages it ignores (and whose read receipts its
# toxcore sends: the mail would be lost with 250). The rule: a key that ever greeted as a
# bridge (in this run or an earlier one, remembered on disk) is a bridge until the friendship
# ends; its chat messages, avatars and a slow greeting are noise, logged, never a downgrade.
# Mail to a friend whose kind is not known yet waits at DATA until this deadline of its link.
GREETING_WAIT = 30.0


def status_message(address: str) -> str:
    return f"chat messages become e-mail to {address}"  # first words first: apps cut it short


class Identity:
    """Handler of one ToxNode's events; keeps who is online since when."""

    def __init__(
        self,
        config: Config,
        user: User,
        node: ToxNode,
        store: DeliveryStore,
        routes: Routes,
        partials: Partials,
        chat_store: ChatStore,
        pacer: Pacer | None = None,
    ) -> None:
        self.config, self.user, self.node = config, user, node
        self.friends = Friends(config, user, node, routes, self.save)
        self.catch_up = CatchUp(config, user, node, routes)
        self.sender = Sender(
            node, config.transfer_stall_timeout, config.result_timeout, self._peer_inflates, pacer
        )
        partial_dir = state_subdir(partials.root, user.mailbox)
        # Completed files from chat apps, until their chat mail is in the mailbox.
        chat_files_dir = state_subdir(state_subdir(config.state_dir, "chat-files"), user.mailbox)
        self._dovecot = lmtp_out.LMTPClient(config.dovecot_lmtp, config.hostname)  # one mail at a time
        self.receiver = Receiver(
            node,
            config.max_message_size,
            config.hostname,
            user.mailbox,
            user.address,
            self._deliver,
            store,
            partial_dir,
            self.friends.vet,
            config.forged_sender,
            partials=partials,
        )
        self.chats = Chats(
            chat_store,
            config.chat,
            user.mailbox,
            user.address,
            config.hostname,
            self._deliver_bytes,
            self._who_is,
            files_dir=chat_files_dir,
            tell=self._tell,
        )
        self.chat_files = ChatFiles(
            node,
            user.mailbox,
            config.max_message_size,
            partial_dir,
            chat_files_dir,
            partials,
            self.chats.on_file,
            self.chats.file_bytes,
            self.chats.file_day_left,
            lambda key: self.names.get(key, ""),
        )
        self.chats.file_arriving = self.chat_files.arriving
        self.chat_sender = ChatSender(
            node,
            config.result_timeout,
            FileOffers(node, config.chat.file_accept_wait, config.transfer_stall_timeout),
            config.chat.file_max_size,
        )
        self._chat_store = chat_store
        self.chat_apps = chat_store.chat_apps(user.mailbox)  # friends' keys known not to be bridges
        self.bridges = chat_store.bridges(user.mailbox)  # keys that greeted as bridges, ever
        self._kind_known: dict[bytes, asyncio.Event] = {}  # set when a friend's kind is learned
        self._noise_told: set[bytes] = set()  # bridges whose chat noise was logged in this run
        self.names: dict[bytes, str] = {}  # friend's key → the Tox name it last told us
        self.peers: dict[int, str] = {}  # friend → software named in its greeting
        self.capabilities: dict[int, frozenset[str]] = {}  # friend → words after its greeting
        self.offline_since: dict[bytes, float] = {}  # friend's key → when this run saw them go offline
        self.online_since: dict[bytes, float] = {}  # friend's key → when their connection came up
        self.network_since: float | None = None  # when this identity last joined the Tox network
        self.offline_network_since: float | None = time.time()  # since when it is off it (start: now)
        self.search = FriendSearch()  # offline friends re-added after a DHT key changed
        self.seen = LastSeen(seen_path(profile.profile_path(config.state_dir, user.mailbox)))
        # a new node has a new DHT key: every friend must learn it (all are offline yet)
        self.search.joined([node.friend_public_key(f) for f in node.friends()], time.monotonic())
        node.handler = self
        # Friends on a plain chat app see this under the bridge's name (its address).
        node.set_status_message(status_message(user.address))

    @classmethod
    def open(
        cls,
        config: Config,
        user: User,
        store: DeliveryStore,
        routes: Routes,
        partials: Partials,
        chat_store: ChatStore,
        pacer: Pacer | None = None,
    ) -> Identity:
        path = profile.profile_path(config.state_dir, user.mailbox)
        savedata = profile.read(path)
        # Start at a random port of the range: a restart on the port the killed process had
        # made the peer's toxcore keep talking to the dead session (measured: no reconnect in
        # minutes); a fresh port reconnected in about 10 s. The whole range is the fallback.
        low, high = config.tox.port_range
        try:
            try:
                start = random.randint(low, high)
                node = profile.node_from_profile(
                    path, savedata, profile.tox_options(config, start), name=user.address
                )
            except ToxPortError:
                node = profile.node_from_profile(
                    path, savedata, profile.tox_options(config), name=user.address
                )
        except ToxPortError:
            raise ToxPortError(
                f"{user.mailbox}: no free UDP port in tox.port_range {low}-{high} "
                "(other Tox programs running? widen the range)"
            ) from None
        identity = cls(config, user, node, store, routes, partials, chat_store, pacer)
        if savedata is None:
            identity.save()
        return identity

    def save(self) -> None:
        profile.write(profile.profile_path(self.config.state_dir, self.user.mailbox), self.node.savedata())

    async def _deliver(self, sender: str, message: lmtp_out.Spooled) -> Reply:
        replies = await self._dovecot.deliver(sender, [self.user.mailbox], message)
        return replies[0]

    async def _deliver_bytes(self, sender: str, message: bytes) -> Reply:
        replies = await self._dovecot.deliver(sender, [self.user.mailbox], message)
        return replies[0]

    def _who_is(self, public_key: bytes, tox_name: str) -> tuple[str, str]:
        """Who a chat friend is in the From of their mail: the contact, else their Tox name
        (or key) at KEY@tox."""
        contact = self.friends.contact(public_key)
        if contact is not None:
            return contact.name, contact.addresses[0] if contact.addresses else f"{public_key.hex()}@tox"
        return tox_name or self.names.get(public_key, ""), f"{public_key.hex()}@tox"

    def _tell(self, public_key: bytes, text: str) -> None:
        """One chat line to a chat friend (from the node's loop, inside toxcore's callbacks)."""
        friend = self.node.friend_by_public_key(public_key)
        if friend is None:
            return
        try:
            self.node.send_message(friend, text.encode()[:MAX_MESSAGE_LENGTH])
        except ToxError as e:
            log.debug("%s: chat line to %s not sent: %s", self.user.mailbox, public_key.hex()[:8], e)

    def bootstrap(self) -> None:
        for node in self.config.tox.bootstrap:
            self._try(self.node.bootstrap, node)
        for node in self.config.tox.tcp_relays:
            self._try(self.node.add_tcp_relay, node)

    def _try(self, method, node) -> None:
        try:
            method(node.host, node.port, bytes.fromhex(node.public_key))
        except ToxError as e:
            log.warning("%s: cannot use Tox node %s:%d: %s", self.user.mailbox, node.host, node.port, e)

    def last_online(self, friend: int) -> float | None:
        """When an offline friend was last seen: by this run, else by toxcore (kept in the profile)."""
        public_key = self.node.friend_public_key(friend)
        if public_key in self.offline_since:
            return self.offline_since[public_key]
        known = [
            t for t in (self.node.friend_last_online(friend), self.seen.get(public_key)) if t is not None
        ]
        return max(known) if known else None  # toxcore's, or ours if it forgot on a re-add

    def offline_text(self, friend: int) -> str:
        """Words for Postfix's deferral (and in the end its bounce): who is offline, since when."""
        since = self.last_online(friend)
        key = self.node.friend_label(friend)
        if since is None:
            return f"Tox friend {key} has not been online yet (friend request not accepted?)"
        return f"Tox friend {key} offline since {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(since))}"

    def offline_reply(self, friend: int, address: str) -> Reply:
        """Postfix's deferral for an offline friend; its words end up in the bounce, so those
        for a chat app say plainly what the recipient uses and what happens to the mail."""
        public_key = self.node.friend_public_key(friend)
        if not self.is_chat_app(public_key):
            return offline(f"<{address}>: {self.offline_text(friend)}")
        contact = self.friends.contact(public_key)
        who = (
            f"{contact.name} (Tox friend {public_key.hex()[:8]})"
            if contact
            else f"Tox friend {public_key.hex()[:8]}"
        )
        since = self.last_online(friend)
        when = time.strftime(" since %Y-%m-%d %H:%M UTC", time.gmtime(since)) if since else ""
        return chat_unreachable(
            f"<{address}>: {who} uses a Tox chat app (not a mail bridge) and has been offline{when}"
        )

    def is_chat_app(self, public_key: bytes) -> bool:
        """Mail to this friend goes as chat: known as a chat app, never greeted as a bridge."""
        return public_key in self.chat_apps and public_key not in self.bridges

    def kind_known(self, public_key: bytes) -> bool:
        return public_key in self.bridges or public_key in self.chat_apps

    async def learn_kind(self, public_key: bytes) -> bool:
        """Whether mail to this online friend goes as chat. A friend of unknown kind (a new
        KEY@tox) is waited for until GREETING_WAIT after its link came up: a greeting makes it a
        bridge, a chat message or an avatar a chat app; online and still unknown then: a chat
        app (a bridge greets within a second). The first mail to a chat app never goes as a
        file it cannot take."""
        if not self.kind_known(public_key):
            since = self.online_since.get(public_key)  # None: offline, the send says 4xx
            left = 0.0 if since is None else since + GREETING_WAIT - time.time()
            if left > 0:
                log.info(
                    "%s: friend %s: bridge or chat app? waiting up to %.0f s for its greeting",
                    self.user.mailbox,
                    public_key.hex()[:8],
                    left,
                )
                event = self._kind_known.setdefault(public_key, asyncio.Event())
                try:
                    async with asyncio.timeout(left):
                        await event.wait()
                except TimeoutError:
                    pass
        return public_key not in self.bridges

    def _kind_learned(self, public_key: bytes) -> None:
        event = self._kind_known.pop(public_key, None)
        if event is not None:
            event.set()

    def chat_delivered(self, public_key: bytes, message: bytes) -> None:
        """A mail reached the chat app: the friend's next burst of chat answers it."""
        found = headers.scan(message[: 64 * 1024]).named("Message-ID")
        message_id = b" ".join(found[0].value.split()).decode("ascii", "replace") if found else ""
        if message_id.startswith("<") and message_id.endswith(">") and "\n" not in message_id:
            self._chat_store.answered(self.user.mailbox, public_key, message_id)

    def _learn_chat_app(self, public_key: bytes, why: str) -> None:
        if public_key in self.bridges:  # noise: a bridge is never downgraded (GREETING_WAIT)
            if public_key not in self._noise_told:
                self._noise_told.add(public_key)
                log.info(
                    "%s: friend %s greeted as a bridge before; now %s: noise, still a bridge, its "
                    "mail goes by file transfer (further such signs not logged)",
                    self.user.mailbox,
                    public_key.hex()[:8],
                    why,
                )
            return
        if public_key in self.chat_apps:
            return
        self.chat_apps.add(public_key)
        self._chat_store.set_chat_app(self.user.mailbox, public_key, True, time.time())
        log.info(
            "%s: friend %s is a chat app, not a bridge (%s); mail to it goes as chat messages",
            self.user.mailbox,
            public_key.hex()[:8],
            why,
        )
        self._kind_learned(public_key)
        self.catch_up.now(public_key)  # mail Postfix deferred for it can go now

    def _no_greeting(self, friend: int, public_key: bytes) -> None:
        try:
            online = self.node.friend_connection(friend) != 0
        except ToxError:
            return  # no longer a friend
        if online and friend not in self.peers and public_key in self.bridges:
            log.info(
                "%s: friend %s (a bridge) has not greeted in %.0f s online; still a bridge",
                self.user.mailbox,
                public_key.hex()[:8],
                GREETING_WAIT,
            )
        elif online and friend not in self.peers:
            self._learn_chat_app(public_key, f"no greeting in {GREETING_WAIT:.0f} s online")

    def end_friendships(self) -> None:
        """Delete the Tox friends `toxbridge contacts remove` asked to be rid of (it wrote them
        into the roster: the CLI has no Tox node), with whatever was on its way to or from them."""
        roster, mailbox = self.friends.routes.roster, self.user.mailbox
        for public_key in roster.friendships_to_end(mailbox):
            friend = self.node.friend_by_public_key(public_key)
            if friend is not None:
                self.sender.on_friend_offline(friend)
                self.receiver.on_friend_offline(friend)
                self.chat_files.on_friend_offline(friend)
                try:
                    self.node.friend_delete(friend)
                except ToxError as e:
                    log.warning("%s: cannot end the Tox friendship with %s: %s", mailbox, public_key.hex(), e)
                    continue
                self.peers.pop(friend, None)
                self._forget_kind(public_key)
                self.online_since.pop(public_key, None)
                self.offline_since.pop(public_key, None)
                self.save()
                log.info("%s: ended the Tox friendship with %s (contacts remove)", mailbox, public_key.hex())
            roster.friendship_ended(mailbox, public_key)

    def drop_stalled(self) -> None:
        """Transfers that made no progress for transfer_stall_timeout: given up."""
        self.receiver.drop_stalled(self.config.transfer_stall_timeout)
        self.chat_files.drop_stalled(self.config.transfer_stall_timeout)

    def _forget_kind(self, public_key: bytes) -> None:
        self.bridges.discard(public_key)
        self.chat_apps.discard(public_key)
        self._noise_told.discard(public_key)
        self._chat_store.forget_kind(self.user.mailbox, public_key)

    async def stop(self) -> None:
        self.catch_up.stop()
        self.chat_files.stop()
        try:
            await self.chats.stop()  # open bursts become mail now
            await self.receiver.stop()
        finally:  # also when the stop's deadline cancels it
            self._dovecot.close()

    def search_friends(self) -> None:
        """Re-add the offline friends that are due (tox/friend_search.py says why)."""
        for public_key in self.search.due(time.monotonic()):
            friend = self.node.friend_by_public_key(public_key)
            if friend is None or self.node.friend_connection(friend) != 0:
                self.search.found(public_key)  # no longer a friend, or back already
                continue
            since = self.last_online(friend)  # toxcore forgets it with the friend: keep it here
            if since is None:
                # never online: maybe our friend request still waits for an answer, and toxcore
                # resends it only for a friend added with one; a re-add would drop it
                self.search.found(public_key)
                continue
            if self.node.readd_friend(friend):
                self.offline_since.setdefault(public_key, since)
                self.seen.keep(public_key, since)
                log.debug("%s: friend %s searched afresh", self.user.mailbox, self.node.friend_label(friend))

    # ---- toxcore events (on the loop thread, inside iterate)

    def on_self_connection(self, node, status: int) -> None:
        state = ("offline", "online (TCP)", "online (UDP)")[status]
        if status and self.network_since is None:  # joined: our new DHT key is news to every friend
            offline = [node.friend_public_key(f) for f in node.friends() if node.friend_connection(f) == 0]
            self.search.joined(offline, time.monotonic())
        self.network_since = time.time() if status else None
        self.offline_network_since = None if status else time.time()
        log.info("%s: Tox network %s", self.user.mailbox, state)

    def on_friend_request(self, node, public_key: bytes, message: bytes) -> None:
        self.friends.on_request(public_key, message)

    def on_friend_connection(self, node, friend: int, status: int) -> None:
        key = node.friend_label(friend)
        public_key = node.friend_public_key(friend)
        if status == 0:
            log.info("%s: friend %s went offline", self.user.mailbox, key)
            self.offline_since[public_key] = time.time()
            self.online_since.pop(public_key, None)
            self.search.lost(public_key, time.monotonic())
            self.peers.pop(friend, None)
            self.capabilities.pop(friend, None)
            self.sender.on_friend_offline(friend)
            self.chat_sender.on_friend_offline(friend)
            if self.chat_sender.offers is not None:
                self.chat_sender.offers.on_friend_offline(friend)
            self.receiver.on_friend_offline(friend)
            self.chat_files.on_friend_offline(friend)
            return
        asyncio.get_running_loop().call_later(GREETING_WAIT, self._no_greeting, friend, public_key)
        log.info("%s: friend %s online (%s)", self.user.mailbox, key, "UDP" if status == 2 else "TCP")
        self.offline_since.pop(public_key, None)
        self.online_since.setdefault(public_key, time.time())
        self.search.found(public_key)
        try:
            node.send_lossless_packet(friend, wire.encode_greeting(SOFTWARE))
            if self.config.tox.compression:
                node.send_lossless_packet(friend, wire.encode_capabilities((wire.ZLIB,)))
        except ToxError as e:
            log.debug("greeting to %s not sent: %s", key, e)
        self.catch_up.now_and_again(friend, public_key)

    def on_lossless_packet(self, node, friend: int, data: bytes) -> None:
        if data[:1] == bytes([wire.PACKET_RESULT]):
            self.sender.on_result(friend, data)
        elif data[:1] == bytes([wire.PACKET_GREETING]):
            try:
                version, software = wire.decode_greeting(data)
            except wire.WireError:
                return
            self.peers[friend] = software
            # What it can do comes in the packet after: a bridge that restarted as an older
            # version greets without one, and must not get what only the newer one reads.
            self.capabilities.pop(friend, None)
            public_key = node.friend_public_key(friend)
            if public_key not in self.bridges:  # remembered: later runs never downgrade it
                self.bridges.add(public_key)
                self.chat_apps.discard(public_key)  # it was a chat app's key, now a bridge's
                self._chat_store.set_bridge(self.user.mailbox, public_key, time.time())
            self._kind_learned(public_key)
            log.info(
                "%s: friend %s is a bridge (%s, protocol %d)",
                self.user.mailbox,
                node.friend_label(friend),
                software,
                version,
            )
            # A peer bridge that restarted quickly greets us without our side ever seeing it
            # offline (toxcore notices a killed peer only after ~28 s): push its mail now too.
            self.catch_up.now(node.friend_public_key(friend))
        elif data[:1] == bytes([wire.PACKET_CAPABILITIES]) and friend in self.peers:
            try:
                self.capabilities[friend] = wire.decode_capabilities(data)
            except wire.WireError:
                return
            log.info(
                "%s: friend %s can %s",
                self.user.mailbox,
                node.friend_label(friend),
                " ".join(sorted(self.capabilities[friend])) or "nothing more",
            )

    def _peer_inflates(self, friend: int) -> bool:
        """Whether mail to `friend` may go compressed: it greeted as a bridge that inflates zlib."""
        return self.config.tox.compression and wire.ZLIB in self.capabilities.get(friend, frozenset())

    def on_friend_name(self, node, friend: int, name: bytes) -> None:
        self.names[node.friend_public_key(friend)] = name.decode("utf-8", "replace")

    def on_friend_message(self, node, friend: int, kind: int, text: bytes) -> None:
        public_key = node.friend_public_key(friend)
        if public_key in self.bridges:  # a bridge: bridges carry mail, they do not chat
            self._learn_chat_app(public_key, f"it sent a chat message ({len(text)} bytes, ignored)")
            return
        self._learn_chat_app(public_key, "it sent a chat message")
        self.chats.on_message(public_key, self.names.get(public_key, ""), kind == MESSAGE_ACTION, text)

    def on_read_receipt(self, node, friend: int, message_id: int) -> None:
        self.chat_sender.on_read_receipt(friend, message_id)

    def on_file_recv(self, node, friend, number, kind, size, filename) -> None:
        public_key = node.friend_public_key(friend)
        if kind == FILE_KIND_AVATAR:
            self._learn_chat_app(public_key, "it offered an avatar")  # bridges have none
        if (
            kind == FILE_KIND_DATA
            and filename != wire.MAIL_FILENAME  # a mail transfer is judged as one, whoever sends it
            and friend not in self.peers
            and public_key not in self.bridges
        ):
            # Bridges offer only mail: any other file is a chat app's (a photo, a document).
            self._learn_chat_app(public_key, "it offered a file")
            self.chat_files.offer(friend, number, size, filename)
            return
        self.receiver.on_file_recv(friend, number, kind, size, filename)

    def on_file_recv_chunk(self, node, friend, number, position, data) -> None:
        # A receiving file number is either a mail's or a chat file's: the other ignores it.
        self.receiver.on_chunk(friend, number, position, data)
        self.chat_files.on_chunk(friend, number, position, data)

    def on_file_chunk_request(self, node, friend, number, position, length) -> None:
        # A sending file number is either a mail's or a chat file offer's: the other ignores it.
        self.sender.on_chunk_request(friend, number, position, length)
        if self.chat_sender.offers is not None:
            self.chat_sender.offers.on_chunk_request(friend, number, position, length)

    def on_file_recv_control(self, node, friend, number, control) -> None:
        # Sending and receiving file numbers never collide in toxcore, so both may look.
        self.sender.on_control(friend, number, control)
        self.receiver.on_control(friend, number, control)
        self.chat_files.on_control(friend, number, control)
        if self.chat_sender.offers is not None:
            self.chat_sender.offers.on_control(friend, number, control)
