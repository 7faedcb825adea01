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


def _outbound(sender: _EndlessSender) -> Outbound:
    identity = SimpleNamespace(
        user=SimpleNamespace(address=SENDER, mailbox="alice"),
        config=SimpleNamespace(privacy=Privacy()),
        node=SimpleNamespace(
            public_key=b"\x0a" * 32, friend_by_public_key=lambda key: 1, friend_connection=lambda friend: 2
        ),
        sender=sender,
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
