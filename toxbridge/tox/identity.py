"""One local user's Tox identity: its toxcore node, profile, and the transfers it sends and receives."""

from __future__ import annotations

import logging

import asyncio
import random
import subprocess
import time

from ..mail import lmtp_out, postqueue
from . import profile as profiles, wire
from ..contacts import sender_check as senders
from ..address import is_tox_address
from ..config import Config, User
from ..files import state_subdir
from ..contacts.book import Contact
from .incoming import Receiver
from ..contacts.routes import Routes
from .outgoing import Sender
from .delivered import DeliveryStore
from .errors import ToxError, ToxLoadError, ToxPortError
from .node import ToxNode, ToxOptions
from ..mail.smtpreply import Reply

log = logging.getLogger("toxbridge.identity")

SOFTWARE = "toxbridge"
# qmgr keeps a failed address lookup (the bridge's socketmap was down) for its last
# sender/recipient pair about 30 s (measured, tests/test_socketmap.py): mail pushed within that
# window is deferred again. A second push after it catches that mail.
SECOND_PUSH_SECONDS = 35.0


def tox_options(config: Config, start_port: int | None = None) -> ToxOptions:
    tox = config.tox
    return ToxOptions(
        udp=tox.udp,
        ipv6=tox.ipv6,
        local_discovery=tox.local_discovery,
        start_port=start_port or tox.port_range[0],
        end_port=tox.port_range[1],
        proxy_type=tox.proxy.type,
        proxy_host=tox.proxy.host,
        proxy_port=tox.proxy.port,
    )


OFFLINE = ToxOptions(udp=False, local_discovery=False)  # binds no port: enough to read or make a profile


def node_from_profile(path, savedata: bytes | None, options: ToxOptions, name: str = "") -> ToxNode:
    try:
        return ToxNode(options, savedata, name=name)
    except ToxLoadError as e:
        raise profiles.ProfileError(
            f"{path} is not a usable Tox profile ({e}); restore it from a backup, or move it away "
            "to create a new identity (friends will have to add the new Tox ID)") from None


def ensure_profile(config: Config, user: User) -> tuple[bytes, bool]:
    """The user's Tox ID, creating the profile (0600) if there is none. Returns (address, created)."""
    path = profiles.profile_path(config.state_dir, user.mailbox)
    savedata = profiles.read(path)
    node = node_from_profile(path, savedata, OFFLINE)
    try:
        if savedata is None:
            profiles.write(path, node.savedata())
        return node.address, savedata is None
    finally:
        node.close()


def read_address(config: Config, user: User) -> bytes | None:
    """The user's Tox ID from their profile; None when there is no profile yet."""
    path = profiles.profile_path(config.state_dir, user.mailbox)
    savedata = profiles.read(path)
    if savedata is None:
        return None
    node = node_from_profile(path, savedata, OFFLINE)
    try:
        return node.address
    finally:
        node.close()


class Identity:
    """Handler of one ToxNode's events; owns its Sender and Receiver."""

    def __init__(self, config: Config, user: User, node: ToxNode, store: DeliveryStore, routes: Routes) -> None:
        self.config, self.user, self.node, self.routes = config, user, node, routes
        self.sender = Sender(node, config.transfer_stall_timeout, config.result_timeout)
        partial_dir = state_subdir(state_subdir(config.state_dir, "partial"), user.mailbox)
        self._dovecot = lmtp_out.LMTPClient(config.dovecot_lmtp, config.hostname)  # one mail at a time
        self.receiver = Receiver(node, config.max_message_size, config.hostname, user.mailbox, user.address,
                                 self._deliver, store, partial_dir, self._vet, config.forged_sender)
        self.peers: dict[int, str] = {}  # friend → software named in its greeting
        self.offline_since: dict[bytes, float] = {}  # friend's key → when this run saw them go offline
        self.online_since: dict[bytes, float] = {}  # friend's key → when their connection came up
        self.network_since: float | None = None  # when this identity last joined the Tox network
        self.offline_network_since: float | None = time.time()  # since when it is off it (start: now)
        self._tasks: set[asyncio.Task] = set()
        self._catching_up: set[bytes] = set()
        node.handler = self

    @classmethod
    def open(cls, config: Config, user: User, store: DeliveryStore, routes: Routes) -> "Identity":
        path = profiles.profile_path(config.state_dir, user.mailbox)
        savedata = profiles.read(path)
        # Start at a random port of the range: a restart on the port the killed process had
        # made the peer's toxcore keep talking to the dead session (measured: no reconnect in
        # minutes); a fresh port reconnected in about 10 s. The whole range is the fallback.
        low, high = config.tox.port_range
        try:
            try:
                start = random.randint(low, high)
                node = node_from_profile(path, savedata, tox_options(config, start), name=user.address)
            except ToxPortError:
                node = node_from_profile(path, savedata, tox_options(config), name=user.address)
        except ToxPortError:
            raise ToxPortError(f"{user.mailbox}: no free UDP port in tox.port_range {low}-{high} "
                               "(other Tox programs running? widen the range)") from None
        identity = cls(config, user, node, store, routes)
        if savedata is None:
            identity.save()
        return identity

    def save(self) -> None:
        profiles.write(profiles.profile_path(self.config.state_dir, self.user.mailbox), self.node.savedata())

    async def _deliver(self, sender: str, message: lmtp_out.Spooled) -> Reply:
        replies = await self._dovecot.deliver(sender, [self.user.mailbox], message)
        return replies[0]

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

    # ---- toxcore events (on the loop thread, inside iterate)

    def on_self_connection(self, node, status: int) -> None:
        state = ("offline", "online (TCP)", "online (UDP)")[status]
        self.network_since = time.time() if status else None
        self.offline_network_since = None if status else time.time()
        log.info("%s: Tox network %s", self.user.mailbox, state)

    def request_text(self) -> bytes:
        """What a friend request from this identity says: who is asking, from which household."""
        return f"{self.user.address} asks to exchange mail over Tox (toxbridge at {self.config.hostname})".encode()

    def follow_contacts(self) -> None:
        """Make every contact that serves this user a Tox friend: a friend request when the full
        Tox ID is known, else a friend without request (their side must list us too)."""
        changed = False
        for contact in self.routes.book.for_user(self.user.mailbox):
            if contact.public_key == self.node.public_key or self.node.friend_by_public_key(contact.public_key) is not None:
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
            log.info("%s: contact %r (%s) is now a Tox friend%s", self.user.mailbox, contact.name,
                     contact.public_key.hex()[:8], ", request sent" if contact.tox_id else "")
        if changed:
            self.save()

    def _contact(self, public_key: bytes) -> Contact | None:
        return next((c for c in self.routes.book.with_key(public_key) if c.serves(self.user.mailbox)), None)

    def on_friend_request(self, node, public_key: bytes, message: bytes) -> None:
        text = message.decode("utf-8", "replace")[:200]
        contact = self._contact(public_key)
        policy = "accept" if contact else self.config.tox.friend_requests
        if policy == "accept":
            try:
                node.friend_add_norequest(public_key)
            except ToxError as e:
                log.warning("%s: cannot accept friend request from %s: %s", self.user.mailbox, public_key.hex()[:8], e)
                return
            self.save()
            self.routes.roster.drop_pending(self.user.mailbox, public_key)
            who = f"contact {contact.name!r}" if contact else "a stranger (friend_requests: accept)"
            log.info("%s: accepted friend request from %s, %s (%r)", self.user.mailbox, public_key.hex(), who, text)
        elif policy == "pending":
            self.routes.roster.add_pending(self.user.mailbox, public_key, text)
            log.info("%s: friend request from %s (%r) is pending; see `toxbridge contacts pending`",
                     self.user.mailbox, public_key.hex(), text)
        else:
            log.info("%s: ignored friend request from %s (%r); friend_requests is 'ignore'",
                     self.user.mailbox, public_key.hex(), text)

    def _vet(self, public_key: bytes, envelope: wire.Envelope, message: bytes) -> senders.Verdict:
        """May this friend send as the addresses the mail claims? Learns them for this mailbox:
        unclaimed ones, and those another local identity learned for the same key (pairings are
        kept per mailbox: without its own, this user's reply would find no route)."""
        from_header = senders.from_addresses(message)
        verdict = senders.check(public_key, envelope.sender, from_header, self.routes.claims, self.config.learn_senders)
        if not (verdict.ok and self.config.learn_senders):
            return verdict
        for address in dict.fromkeys(a.lower() for a in [envelope.sender, *from_header] if a and not is_tox_address(a)):
            if self.routes.learn(self.user.mailbox, address, public_key):
                log.info("%s: learned %s -> Tox key %s; replies to it go over Tox",
                         self.user.mailbox, address, public_key.hex()[:8])
        return verdict

    def on_friend_connection(self, node, friend: int, status: int) -> None:
        key = self.node.friend_label(friend)
        public_key = node.friend_public_key(friend)
        if status == 0:
            log.info("%s: friend %s went offline", self.user.mailbox, key)
            self.offline_since[public_key] = time.time()
            self.online_since.pop(public_key, None)
            self.peers.pop(friend, None)
            self.sender.on_friend_offline(friend)
            self.receiver.on_friend_offline(friend)
            return
        log.info("%s: friend %s online (%s)", self.user.mailbox, key, "UDP" if status == 2 else "TCP")
        self.offline_since.pop(public_key, None)
        self.online_since.setdefault(public_key, time.time())
        try:
            node.send_lossless_packet(friend, wire.encode_greeting(SOFTWARE))
        except ToxError as e:
            log.debug("greeting to %s not sent: %s", key, e)
        self._spawn(self._catch_up(public_key))
        self._spawn(self._catch_up_again(friend, public_key))

    async def _catch_up_again(self, friend: int, public_key: bytes) -> None:
        await asyncio.sleep(SECOND_PUSH_SECONDS)
        try:
            if self.node.friend_connection(friend) != 0 and self.node.friend_public_key(friend) == public_key:
                await self._catch_up(public_key)
        except ToxError:  # the friend was removed meanwhile
            pass

    async def _catch_up(self, public_key: bytes) -> None:
        """Ask Postfix to deliver this friend's deferred mail now, not after its backoff."""
        if public_key in self._catching_up:  # connection-up and greeting both ask, ms apart
            return
        self._catching_up.add(public_key)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            queue = await loop.run_in_executor(None, postqueue.list_queue, self.config.postfix)
            wanted = postqueue.deferred_for(queue, self.user.address, self.routes.recipient_matcher(self.user.mailbox, public_key))
            pushed = await loop.run_in_executor(None, postqueue.push, self.config.postfix, wanted)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("%s: cannot reach Postfix's queue to push mail for %s: %s (check postfix.config_dir "
                        "and postfix.postqueue)", self.user.mailbox, public_key.hex()[:8], e)
            return
        finally:
            self._catching_up.discard(public_key)
        if pushed:
            log.info("%s: friend %s online: pushed %d deferred mail(s) in %.2f s: %s", self.user.mailbox,
                     public_key.hex()[:8], len(pushed), time.monotonic() - started, " ".join(pushed))

    def offline_text(self, friend: int) -> str:
        """Words for Postfix's deferral (and in the end its bounce): who is offline, since when."""
        since = self.offline_since.get(self.node.friend_public_key(friend)) or self.node.friend_last_online(friend)
        key = self.node.friend_label(friend)
        if since is None:
            return f"Tox friend {key} has not been online yet (friend request not accepted?)"
        return f"Tox friend {key} offline since {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(since))}"

    def snapshot(self) -> dict:
        """What `toxbridge status` shows of this identity (through the control socket)."""
        node = self.node
        friends = []
        for friend in node.friends():
            key = node.friend_public_key(friend)
            contact = self._contact(key)
            connection = node.friend_connection(friend)
            friends.append({
                "key": key.hex(),
                "name": contact.name if contact else None,
                "online": connection != 0,
                "via": ("", "TCP", "UDP")[connection],
                "since": self.online_since.get(key) if connection else
                self.offline_since.get(key) or node.friend_last_online(friend),
                "bridge": friend in self.peers,
            })
        return {
            "mailbox": self.user.mailbox,
            "address": self.user.address,
            "tox_id": node.address.hex().upper(),
            "network": ("", "TCP", "UDP")[node.self_connection()],
            "network_since": self.network_since,
            "friends": friends,
        }

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.receiver.stop()
        self._dovecot.close()

    def on_lossless_packet(self, node, friend: int, data: bytes) -> None:
        if data[:1] == bytes([wire.PACKET_RESULT]):
            self.sender.on_result(friend, data)
        elif data[:1] == bytes([wire.PACKET_GREETING]):
            try:
                version, software = wire.decode_greeting(data)
            except wire.WireError:
                return
            self.peers[friend] = software
            log.info("%s: friend %s is a bridge (%s, protocol %d)", self.user.mailbox, self.node.friend_label(friend), software, version)
            # A peer bridge that restarted quickly greets us without our side ever seeing it
            # offline (toxcore notices a killed peer only after ~28 s): push its mail now too.
            self._spawn(self._catch_up(node.friend_public_key(friend)))

    def on_friend_message(self, node, friend: int, kind: int, text: bytes) -> None:
        log.info("%s: friend %s sent a chat message (%d bytes); mail bridges do not chat", self.user.mailbox, self.node.friend_label(friend), len(text))

    def on_file_recv(self, node, friend, number, kind, size, filename) -> None:
        self.receiver.on_file_recv(friend, number, kind, size, filename)

    def on_file_recv_chunk(self, node, friend, number, position, data) -> None:
        self.receiver.on_chunk(friend, number, position, data)

    def on_file_chunk_request(self, node, friend, number, position, length) -> None:
        self.sender.on_chunk_request(friend, number, position, length)

    def on_file_recv_control(self, node, friend, number, control) -> None:
        # Sending and receiving file numbers never collide in toxcore, so both may look.
        self.sender.on_control(friend, number, control)
        self.receiver.on_control(friend, number, control)

