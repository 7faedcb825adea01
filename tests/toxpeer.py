"""A plain Tox client for tests: a bare ToxNode (not a bridge) on its own event-loop thread.

It plays a friend of a bridge that is careless or hostile: it takes every friend request and
file, never answers a mail, and can send whatever transfers and packets a test wants — any file
kind, name, size and file_id, bytes it withholds, cancels, or a node that stops mid-transfer.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading

from toxbridge.lab.ports import wait_until
from toxbridge.tox import wire
from toxbridge.tox.library import FILE_CONTROL_CANCEL, FILE_CONTROL_RESUME, FILE_KIND_DATA
from toxbridge.tox.node import ToxNode
from toxbridge.tox.options import ToxOptions


class PlainClient:
    """A ToxNode on its own event-loop thread that accepts friends and files and never answers."""

    def __init__(self, bootstrap, greet: bool = False) -> None:
        """greet: say "I am a bridge" on every connection (a bridge that never answers); without
        it the bridge learns after 10 s that this is a chat app, and sends mail as chat."""
        self.greet = greet
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.files: dict[int, bytearray] = {}
        self.complete: list[bytes] = []
        self.results: list[bytes] = []
        self.outgoing: dict[int, bytes] = {}
        self.limit: dict[int, int] = {}  # outgoing file number -> bytes served before going quiet
        self.served: dict[int, int] = {}  # outgoing file number -> bytes handed to toxcore so far
        self.cancelled: set[int] = set()  # outgoing file numbers the far end cancelled
        self.closed = False
        self.requests: list[tuple[bytes, bytes]] = []  # (public key, message) of friend requests received
        self.messages: list[bytes] = []  # chat messages received (toxcore sends their receipts)
        self.node: ToxNode = self.call(self._make, bootstrap)

    def _make(self, bootstrap) -> ToxNode:
        # A random port, not toxcore's first free one: a new node on the port a stopped one had
        # was not reached by the bridge (it kept the old session's state), as with restarts.
        start = random.randint(34000, 39000)
        node = ToxNode(
            ToxOptions(udp=True, local_discovery=False, ipv6=False, start_port=start, end_port=start + 200)
        )
        node.handler = self
        node.bootstrap(bootstrap.host, bootstrap.port, bootstrap.public_key)
        node.start(self.loop)
        return node

    def call(self, fn, *args):
        """Run fn(*args) on the client's loop thread (the node's owner) and return its result."""

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def close(self) -> None:
        """Stop the node (a clean tox_kill: friends see it go offline at once) and the thread."""
        if self.closed:
            return
        self.closed = True
        asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    # ---- handler (runs on the client's loop thread)

    def on_friend_request(self, node, public_key, message):
        self.requests.append((public_key, message))
        node.friend_add_norequest(public_key)

    def on_friend_connection(self, node, friend, status):
        if status and self.greet:
            node.send_lossless_packet(friend, wire.encode_greeting("test-peer"))

    def on_friend_message(self, node, friend, kind, text):
        self.messages.append(text)

    def on_file_recv(self, node, friend, number, kind, size, filename):
        self.files[number] = bytearray()
        node.file_control(friend, number, FILE_CONTROL_RESUME)

    def on_file_recv_chunk(self, node, friend, number, position, data):
        if data:
            self.files[number] += data
        else:
            self.complete.append(bytes(self.files.pop(number)))

    def on_file_chunk_request(self, node, friend, number, position, length):
        payload = self.outgoing.get(number)
        if not length or payload is None:
            return
        if position < self.limit.get(number, len(payload)):  # toxcore takes whole chunks only
            node.file_send_chunk(friend, number, position, payload[position : position + length])
            self.served[number] = max(self.served.get(number, 0), position + length)

    def on_file_recv_control(self, node, friend, number, control):
        if control == FILE_CONTROL_CANCEL and number in self.outgoing:
            self.cancelled.add(number)

    def on_lossless_packet(self, node, friend, data):
        self.results.append(data)

    # ---- actions (from the test thread)

    def send_file(
        self,
        friend: int,
        payload: bytes,
        file_id: bytes | None = None,
        *,
        kind: int = FILE_KIND_DATA,
        filename: bytes = wire.MAIL_FILENAME,
        size: int | None = None,
        serve: int | None = None,
    ) -> int:
        """Offer a transfer; `size` may lie about the length, `serve` stops serving after about that many bytes."""

        def start() -> int:
            number = self.node.file_send(
                friend,
                kind,
                len(payload) if size is None else size,
                file_id or hashlib.sha256(payload).digest(),
                filename,
            )
            self.outgoing[number] = payload
            self.cancelled.discard(number)
            self.served.pop(number, None)
            if serve is not None:
                self.limit[number] = serve
            else:
                self.limit.pop(number, None)
            return number

        return self.call(start)

    def cancel(self, friend: int, number: int) -> None:
        self.call(self.node.file_control, friend, number, FILE_CONTROL_CANCEL)

    def send_packet(self, friend: int, data: bytes) -> None:
        self.call(self.node.send_lossless_packet, friend, data)

    def results_for(self, file_id: bytes, since: int = 0) -> list[list[wire.Reply]]:
        """Decoded result packets received for `file_id` (after the first `since` packets)."""
        out = []
        for packet in self.results[since:]:
            if packet[:1] == bytes([wire.PACKET_RESULT]):
                got_id, replies = wire.decode_result(packet)
                if got_id == file_id:
                    out.append(replies)
        return out


def befriend(client: PlainClient, home, user: str, timeout: float = 90.0) -> int:
    """The client asks `user` of household `home` for friendship (the bridge accepts requests);
    returns the client's friend number once the connection is up and the bridge has seen it."""
    mark = home.log_mark()
    tox_id = bytes.fromhex(home.tox_ids[user])
    friend = client.call(client.node.friend_add, tox_id, b"hostile test peer")
    assert wait_until(lambda: client.call(client.node.friend_connection, friend) != 0, timeout)
    home.wait_log(f"{user}: friend {client.node.public_key.hex()[:8]} online", timeout, since=mark)
    return friend


# toxcore resends a friend request until it is answered. 60 s ran out in CI when the lab's one
# DHT node had left the bridges offline (lab/bootstrapd.py, LAB_DHT_SIZE); the margin stays.
REQUEST_ARRIVAL = 180.0


def befriended_by_mail(client: PlainClient, home, user: str, subject: str, timeout: float = 90.0) -> int:
    """`user` of household `home` writes to the client's full Tox ID (the bridge sends a friend
    request; the mail waits); the client accepts. Returns the client's friend number once the
    connection is up and the bridge has seen it. In stages, each with its own evidence when it
    fails: the client on the network, the bridge's request sent, the request received."""
    assert wait_until(lambda: client.call(client.node.self_connection) != 0, 60), "the client never joined"
    tox_id = client.node.address.hex()
    mark = home.log_mark()
    home.postfix.send(home.address(user), [f"{tox_id}@tox"], f"Subject: {subject}\r\n\r\nhello\r\n".encode())
    home.wait_log(f"{user}: sent a friend request to {tox_id[:8]}", 60, since=mark)
    user_key = bytes.fromhex(home.tox_ids[user][:64])
    assert wait_until(
        lambda: client.call(client.node.friend_by_public_key, user_key) is not None, REQUEST_ARRIVAL
    ), f"{user}'s friend request never reached the client:\n{home.log_tail()}"
    friend = client.call(client.node.friend_by_public_key, user_key)
    assert wait_until(lambda: client.call(client.node.friend_connection, friend) != 0, timeout)
    home.wait_log(f"{user}: friend {tox_id[:8]} online", timeout, since=mark)
    return friend
