"""The Postfix-facing LMTP server over a real socket: one reply per recipient, always.

The outbox here is a stand-in for the Tox side; the integration tests drive the real one.
"""

import asyncio
import re
from pathlib import Path

import pytest

from toxbridge.config import Config
from toxbridge.config import parse as parse_config
from toxbridge.mail.lmtp_in import make_server
from toxbridge.mail.smtpreply import Reply, ReplyReader

SENDER = "alice@alice.test"
DEPLOY_YAML = Path(__file__).resolve().parents[1] / "deploy" / "toxbridge.yaml"
GOOD = "a" * 64 + "@tox"


class Outbox:
    def __init__(self, outcome=None, fail=False):
        self.outcome, self.fail, self.sent = outcome, fail, []

    def check_sender(self, address):
        return Reply(250, "2.1.0 Ok") if address == SENDER else Reply(550, "5.7.1 not ours")

    def check_recipient(self, sender, address):
        return Reply(250, "2.1.5 Ok") if address.endswith("@tox") else Reply(550, "5.1.3 bad")

    async def send(self, sender, recipients, message):
        if self.fail:
            raise RuntimeError("boom")
        self.sent.append((sender, recipients, message))
        return self.outcome or [Reply(250, f"2.0.0 <{r}> delivered ✓") for r in recipients]


class Client:
    def __init__(self, reader, writer):
        self.reader, self.writer, self.parser, self.pending = reader, writer, ReplyReader(), []

    async def reply(self):
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(4096), 5)
            assert data, "server closed the connection"
            self.pending += self.parser.feed(data)
        return self.pending.pop(0)

    async def cmd(self, line: bytes):
        self.writer.write(line + b"\r\n")
        return await self.reply()


async def session(outbox, max_size=10_000):
    server = await asyncio.get_running_loop().create_server(
        make_server(outbox, "test", max_size), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    client = Client(*await asyncio.open_connection("127.0.0.1", port))
    assert (await client.reply()).code == 220
    assert (await client.cmd(b"LHLO postfix")).code == 250
    return server, client


def run(coro):
    return asyncio.run(coro)


def test_one_reply_per_recipient_in_order():
    async def go():
        outbox = Outbox(
            outcome=[Reply(250, "2.0.0 ok"), Reply(550, "5.1.1 no such user"), Reply(451, "4.4.1 offline")]
        )
        server, c = await session(outbox)
        assert (await c.cmd(f"MAIL FROM:<{SENDER}>".encode())).code == 250
        for r in ("a", "b", "c"):
            assert (await c.cmd(f"RCPT TO:<{r * 64}@tox>".encode())).code == 250
        assert (await c.cmd(b"RCPT TO:<bob@example.org>")).code == 550
        assert (await c.cmd(b"DATA")).code == 354
        c.writer.write(b"Subject: t\r\n\r\n..dot\r\n\xc3\xa9\r\n.\r\n")
        got = [await c.reply() for _ in range(3)]
        assert [r.code for r in got] == [250, 550, 451]
        assert (await c.cmd(b"NOOP")).code == 250  # still in step
        assert outbox.sent[0][2] == b"Subject: t\r\n\r\n.dot\r\n\xc3\xa9\r\n"
        server.close()

    run(go())


def test_foreign_sender_refused():
    async def go():
        server, c = await session(Outbox())
        reply = await c.cmd(b"MAIL FROM:<mallory@evil.example>")
        assert (reply.code, reply.text[:5]) == (550, "5.7.1")
        server.close()

    run(go())


def test_null_sender_reaches_the_outbox_as_the_empty_string():
    """MAIL FROM:<> (a bounce, a vacation reply) is not aiosmtpd's syntax error: the outbox
    sees the null sender at MAIL, at RCPT and after DATA; RCPT TO:<> stays refused."""

    class NullOutbox(Outbox):
        def __init__(self):
            super().__init__()
            self.asked = []

        def check_sender(self, address):
            self.asked.append(("MAIL", address))
            return Reply(250, "2.1.0 Ok")

        def check_recipient(self, sender, address):
            self.asked.append(("RCPT", sender))
            return super().check_recipient(sender, address)

    async def go():
        outbox = NullOutbox()
        server, c = await session(outbox)
        assert (await c.cmd(b"MAIL FROM:<> SIZE=20 BODY=8BITMIME")).code == 250
        assert (await c.cmd(b"MAIL FROM:<>")).code == 503  # still one MAIL per transaction
        assert (await c.cmd(b"RCPT TO:<>")).code >= 500
        assert (await c.cmd(f"RCPT TO:<{GOOD}>".encode())).code == 250
        assert (await c.cmd(b"DATA")).code == 354
        c.writer.write(b"From: MAILER-DAEMON@bob.test\r\n\r\nbounce\r\n.\r\n")
        assert (await c.reply()).code == 250
        assert outbox.asked == [("MAIL", ""), ("RCPT", ""), ("RCPT", "")]
        assert outbox.sent[0][:2] == ("", [GOOD])
        assert (await c.cmd(b"MAIL FROM:<>junk")).code == 553  # not a null sender, not an address
        server.close()

    run(go())


def test_exception_is_temporary_for_each_recipient():
    async def go():
        server, c = await session(Outbox(fail=True))
        await c.cmd(f"MAIL FROM:<{SENDER}>".encode())
        await c.cmd(f"RCPT TO:<{GOOD}>".encode())
        await c.cmd(("RCPT TO:<" + "b" * 64 + "@tox>").encode())
        await c.cmd(b"DATA")
        c.writer.write(b"x\r\n.\r\n")
        got = [await c.reply() for _ in range(2)]
        assert [(r.code, r.text[:5]) for r in got] == [(451, "4.3.0")] * 2
        assert (await c.cmd(b"NOOP")).code == 250
        server.close()

    run(go())


def test_too_big_answers_each_recipient():
    async def go():
        server, c = await session(Outbox(), max_size=100)
        await c.cmd(f"MAIL FROM:<{SENDER}>".encode())
        await c.cmd(f"RCPT TO:<{GOOD}>".encode())
        await c.cmd(("RCPT TO:<" + "b" * 64 + "@tox>").encode())
        await c.cmd(b"DATA")
        c.writer.write(b"x" * 70 + b"\r\n" + b"y" * 70 + b"\r\n.\r\n")
        got = [await c.reply() for _ in range(2)]
        assert [(r.code, r.text[:5]) for r in got] == [(552, "5.3.4")] * 2
        assert (await c.cmd(b"NOOP")).code == 250
        server.close()

    run(go())


@pytest.mark.parametrize("size, code", [(50, 250), (200, 552)])
def test_size_announced_at_mail(size, code):
    async def go():
        server, c = await session(Outbox(), max_size=100)
        assert (await c.cmd(f"MAIL FROM:<{SENDER}> SIZE={size}".encode())).code == code
        server.close()

    run(go())


def test_size_over_the_limit_at_mail_is_552_5_3_4():
    async def go():
        server, c = await session(Outbox(), max_size=100)
        reply = await c.cmd(f"MAIL FROM:<{SENDER}> SIZE=101".encode())
        assert (reply.code, reply.text[:5]) == (552, "5.3.4")
        assert (await c.cmd(b"NOOP")).code == 250
        server.close()

    run(go())


def test_exception_at_rcpt_is_temporary_and_the_session_stays_in_step():
    class Broken(Outbox):
        def check_recipient(self, sender, address):
            raise RuntimeError("boom")

    async def go():
        server, c = await session(Broken())
        await c.cmd(f"MAIL FROM:<{SENDER}>".encode())
        reply = await c.cmd(f"RCPT TO:<{GOOD}>".encode())
        assert (reply.code, reply.text[:5]) == (451, "4.3.0")
        assert (await c.cmd(b"NOOP")).code == 250
        server.close()

    run(go())


def test_dsn_is_not_announced():
    """Announcing DSN would make Postfix drop NOTIFY=SUCCESS (see lmtp_in._DSN_PARAMS)."""

    async def go():
        server = await asyncio.get_running_loop().create_server(
            make_server(Outbox(), "test", 1000), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        c = Client(*await asyncio.open_connection("127.0.0.1", port))
        await c.reply()
        c.writer.write(b"LHLO postfix\r\n")
        lines: list[bytes] = []
        while not lines or not lines[-1].startswith(b"250 "):
            lines.append(await asyncio.wait_for(c.reader.readline(), 5))
        assert not any(line[4:].upper().startswith(b"DSN") for line in lines), lines
        server.close()

    run(go())


@pytest.mark.parametrize(
    "mail, rcpt, codes",
    [
        ("RET=HDRS ENVID=QQ6Zr+2B1", "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2B@example.org", (250, 250)),
        ("ret=full", "notify=never", (250, 250)),
        ("", "NOTIFY=DELAY", (250, 250)),
        ("RET=ALL", "", (501, None)),
        ("NOTIFY=SUCCESS", "", (555, None)),  # a RCPT parameter on MAIL
        ("", "RET=HDRS", (250, 555)),  # a MAIL parameter on RCPT
        ("", "NOTIFY=SOMETIMES", (250, 501)),
        ("", "NOTIFY=", (250, 501)),
        ("", "ORCPT=bob@example.org", (250, 501)),  # no address type
        ("", "ORCPT=rfc822;a=b", (250, 501)),  # '=' must be xtext-encoded
        ("", "FOO=BAR", (250, 555)),
    ],
)
def test_dsn_parameters(mail, rcpt, codes):
    async def go():
        outbox = Outbox()
        server, c = await session(outbox)
        got_mail = await c.cmd(f"MAIL FROM:<{SENDER}> {mail}".strip().encode())
        got = [got_mail.code, None]
        if got_mail.code == 250:
            got[1] = (await c.cmd(f"RCPT TO:<{GOOD}> {rcpt}".strip().encode())).code
        assert tuple(got) == codes
        assert (await c.cmd(b"NOOP")).code == 250
        if codes == (250, 250):  # and the mail goes on as usual
            assert (await c.cmd(b"DATA")).code == 354
            c.writer.write(b"Subject: dsn\r\n\r\nx\r\n.\r\n")
            assert (await c.reply()).code == 250
            assert outbox.sent[0][1] == [GOOD]
        server.close()

    run(go())


def _postfix_seconds(value: str) -> float:
    """A Postfix time value (600s, 10m, 1h, 1d; no unit means seconds)."""
    unit = value[-1] if value[-1].isalpha() else "s"
    number = value[:-1] if value[-1].isalpha() else value
    return float(number) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


def test_the_session_outlasts_postfixs_wait_for_the_answer():
    """Postfix waits lmtp_data_done_timeout for the answer after DATA (the toxbridge service in
    deploy/postfix/master.cf.toxbridge); the listener must not cut the session first, as aiosmtpd's
    default of 300 s did with a big mail on a slow uplink."""
    master_cf = (
        Path(__file__).resolve().parents[1] / "deploy" / "postfix" / "master.cf.toxbridge"
    ).read_text()
    found = re.findall(r"^\s+-o\s+lmtp_data_done_timeout=(\d+[smhdw]?)\s*$", master_cf, re.M)
    assert len(found) == 1, "master.cf.toxbridge sets lmtp_data_done_timeout once"
    postfix_waits = _postfix_seconds(found[0])
    default = Config(state_dir=Path("/var/lib/toxbridge"), users=()).lmtp_timeout
    assert default > postfix_waits
    deployed = parse_config(DEPLOY_YAML.read_text(), str(DEPLOY_YAML)).lmtp_timeout
    assert deployed > postfix_waits
    # what the listener is given is what aiosmtpd times sessions out with (its own attribute)
    assert make_server(Outbox(), "test", 10_000, deployed)()._timeout_duration == deployed
