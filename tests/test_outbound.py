"""Outbound behind the real LMTP listener, over a stand-in identity whose Tox transfer never ends:
a mail whose Postfix session goes away is cancelled, not left running unaccounted (the real
Tox side is in the integration tests)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

from toxbridge.config import Privacy
from toxbridge.contacts.routes import Routes
from toxbridge.mail.lmtp_in import make_server
from toxbridge.mail.smtpreply import Reply, ReplyReader
from toxbridge.outbound import Outbound
from toxbridge.tox.identity import Identity

SENDER = "alice@alice.test"
BOB = "b" * 64 + "@tox"


class _EndlessSender:
    """A Tox transfer that goes on until it is cancelled."""

    def __init__(self) -> None:
        self.started, self.cancelled = asyncio.Event(), asyncio.Event()

    async def send(self, friend, envelope, message):
        self.started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def _a_bridge(key: bytes) -> bool:
    """Identity.learn_kind of a friend that greeted as a bridge: not a chat app."""
    return False


def _outbound(sender: _EndlessSender) -> Outbound:
    identity = SimpleNamespace(
        user=SimpleNamespace(address=SENDER, mailbox="alice"),
        config=SimpleNamespace(privacy=Privacy()),
        node=SimpleNamespace(
            public_key=b"\x0a" * 32, friend_by_public_key=lambda key: 1, friend_connection=lambda friend: 2
        ),
        sender=sender,
        learn_kind=_a_bridge,
    )
    routes = SimpleNamespace(route=lambda mailbox, rcpt: SimpleNamespace(public_key=b"\x0b" * 32))
    # test doubles, with only what Outbound uses
    return Outbound([cast(Identity, identity)], cast(Routes, routes))


class _Postfix:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.parser = reader, writer, ReplyReader()
        self.pending: list[Reply] = []

    async def reply(self) -> int:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(4096), 5)
            assert data, "the server closed the connection"
            self.pending += self.parser.feed(data)
        return self.pending.pop(0).code

    async def command(self, line: str) -> int:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()


def test_a_mail_whose_postfix_session_is_gone_is_cancelled_not_left_running():
    async def go():
        sender = _EndlessSender()
        outbound = _outbound(sender)
        server = await asyncio.get_running_loop().create_server(
            make_server(outbound, "test", 10_000), "127.0.0.1", 0
        )
        postfix = _Postfix(*await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1]))
        assert await postfix.reply() == 220
        for line in ("LHLO postfix", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{BOB}>"):
            assert await postfix.command(line) == 250
        assert await postfix.command("DATA") == 354
        postfix.writer.write(b"Subject: t\r\n\r\nhi\r\n.\r\n")
        await asyncio.wait_for(sender.started.wait(), 5)
        assert outbound.in_flight == 1
        postfix.writer.close()  # Postfix gives up (lmtp_data_done_timeout) while the mail is on its way
        # The guard only turns a transfer left running into a failure instead of a hung test.
        await asyncio.wait_for(sender.cancelled.wait(), 5)
        assert await asyncio.wait_for(outbound.drain(0.1), 5) == 0
        assert outbound.in_flight == 0
        server.close()

    asyncio.run(go())


class _RecordingSender:
    def __init__(self, mailbox: str, sent: list) -> None:
        self.mailbox, self.sent = mailbox, sent

    async def send(self, friend, envelope, message):
        self.sent.append((self.mailbox, friend, envelope.sender, envelope.recipients))
        return [Reply(250, "2.0.0 ok")] * len(envelope.recipients)


def test_the_null_sender_leaves_from_the_first_user_whose_friend_the_recipient_is():
    """A bounce has no user as sender: the first identity (config order) that is already a friend
    of the recipient's key sends it; none is: 550, and never a friend request."""
    bob_key, carol_key = b"\x0b" * 32, b"\x0c" * 32
    sent: list = []

    def identity(mailbox: str, friends: dict[bytes, int]):
        def friend_add(*args):
            raise AssertionError("a null-sender mail sent a friend request")

        return SimpleNamespace(
            user=SimpleNamespace(address=f"{mailbox}@alice.test", mailbox=mailbox),
            config=SimpleNamespace(privacy=Privacy()),
            node=SimpleNamespace(
                public_key=mailbox.encode().ljust(32, b"\0"),
                friend_by_public_key=friends.get,
                friend_connection=lambda friend: 2,
                friend_add=friend_add,
            ),
            sender=_RecordingSender(mailbox, sent),
            learn_kind=_a_bridge,
        )

    keys = {"bob@tox": bob_key, "carol@tox": carol_key, "carol@carol.test": carol_key}
    routes = SimpleNamespace(route=lambda mailbox, rcpt: SimpleNamespace(public_key=keys[rcpt], tox_id=None))
    identities = [identity("alice", {carol_key: 7}), identity("alan", {bob_key: 3, carol_key: 4})]
    outbound = Outbound([cast(Identity, i) for i in identities], cast(Routes, routes))
    assert outbound.check_sender("").code == 250
    assert outbound.check_recipient("", "bob@tox").code == 250
    assert outbound.check_recipient("", "carol@carol.test").code == 250
    replies = asyncio.run(
        outbound.send("", ["bob@tox", "carol@carol.test", "carol@tox"], b"Subject: x\r\n\r\n")
    )
    assert [r.code for r in replies] == [250, 250, 250]
    assert sorted(sent) == [
        ("alan", 3, "", ("bob@tox",)),
        ("alice", 7, "", ("carol@carol.test", "carol@tox")),
    ]
    keys["dave@tox"] = b"\x0d" * 32  # nobody's friend
    reply = outbound.check_recipient("", "dave@tox")
    assert (reply.code, "no user of this household is a Tox friend" in reply.text) == (550, True)
