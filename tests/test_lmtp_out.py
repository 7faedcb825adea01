"""The LMTP client's kept connection, against a scripted LMTP server (Dovecot itself is in the
end-to-end tests): several mails on one connection, a connection the server dropped between
mails, a connection lost in the middle of a mail (never sent twice by the client), and a server
that stops reading in the middle of a mail (the mailbox is freed for the next one)."""

from __future__ import annotations

import asyncio

from toxbridge.config import Endpoint
from toxbridge.mail.lmtp_out import LMTPClient


class Server:
    """Speaks enough LMTP; `drop_after` mails per connection, then closes (as on idle timeout);
    `cut_in_data`: closes in the middle of the next DATA; `stall_in_data`: stops reading after
    the next 354 and never reads again on that connection (a wedged Dovecot)."""

    def __init__(self, drop_after: int | None = None, cut_in_data: bool = False, stall_in_data: bool = False):
        self.connections = 0
        self.mails: list[bytes] = []
        self.drop_after, self.cut_in_data, self.stall_in_data = drop_after, cut_in_data, stall_in_data
        self.stalled: list[asyncio.StreamWriter] = []

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
                if self.stall_in_data:
                    self.stall_in_data = False
                    self.stalled.append(writer)  # kept open, never read: the client must give up
                    return
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


async def _run(server: Server, messages: list[bytes], timeout: float = 60.0) -> list:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = LMTPClient(Endpoint(host="127.0.0.1", port=port), "test", timeout=timeout)
    try:
        # The guard only turns a wedged client into a failure instead of a hung test run.
        return [(await asyncio.wait_for(client.deliver("a@tox", ["bob"], m), 30))[0] for m in messages]
    finally:
        client.close()
        listener.close()
        for writer in server.stalled:
            writer.close()


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


def test_a_server_that_stops_reading_defers_the_mail_and_frees_the_mailbox():
    """More than the socket buffers hold, to a server that never reads it: the write is bounded by
    the session timeout, the mail is answered 4xx, the session dropped, the next mail delivered."""
    server = Server(stall_in_data=True)
    big = b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * (400 * 1024)  # 32 MiB
    replies = asyncio.run(_run(server, [big, b"Subject: 2\r\n\r\ntwo\r\n"], timeout=0.5))
    assert replies[0].code == 451 and "Timeout" in replies[0].text
    assert replies[1].code == 250
    assert server.connections == 2 and len(server.mails) == 1
