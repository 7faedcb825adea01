"""The LMTP client's kept connection, against a scripted LMTP server (Dovecot itself is in the
end-to-end tests): several mails on one connection, a connection the server dropped between
mails, and a connection lost in the middle of a mail (never sent twice by the client)."""

from __future__ import annotations

import asyncio

from toxbridge.config import Endpoint
from toxbridge.mail.lmtp_out import LMTPClient


class Server:
    """Speaks enough LMTP; `drop_after` mails per connection, then closes (as on idle timeout);
    `cut_in_data`: closes in the middle of the next DATA."""

    def __init__(self, drop_after: int | None = None, cut_in_data: bool = False):
        self.connections = 0
        self.mails: list[bytes] = []
        self.drop_after, self.cut_in_data = drop_after, cut_in_data

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        writer.write(b"220 test LMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"LHLO":
                writer.write(b"250-test\r\n250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET"):
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                if self.cut_in_data:
                    self.cut_in_data = False
                    break
                body = await reader.readuntil(b"\r\n.\r\n")
                self.mails.append(body)
                served += 1
                writer.write(b"250 2.0.0 saved\r\n")
                if served == self.drop_after:
                    await writer.drain()
                    break
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            await writer.drain()
        writer.close()


async def _run(server: Server, messages: list[bytes]) -> list:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = LMTPClient(Endpoint(host="127.0.0.1", port=port), "test")
    try:
        return [(await client.deliver("a@tox", ["bob"], m))[0] for m in messages]
    finally:
        client.close()
        listener.close()


def test_mails_share_one_connection():
    server = Server()
    replies = asyncio.run(_run(server, [b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n"]))
    assert [r.code for r in replies] == [250, 250]
    assert server.connections == 1 and len(server.mails) == 2


def test_a_connection_the_server_closed_between_mails_is_replaced():
    server = Server(drop_after=1)
    replies = asyncio.run(_run(server, [b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n"]))
    assert [r.code for r in replies] == [250, 250]
    assert server.connections == 2 and len(server.mails) == 2


def test_a_connection_lost_during_data_defers_the_mail_without_resending_it():
    server = Server(cut_in_data=True)
    replies = asyncio.run(_run(server, [b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n"]))
    assert replies[0].code == 451 and replies[1].code == 250
    assert server.mails == [b"Subject: 2\r\n\r\ntwo\r\n.\r\n"] and server.connections == 2
