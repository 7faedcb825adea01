"""The milter session (mail/milter.py) fed the bytes Postfix sends, at every split point, and
the ordinary-mail policy behind it (ordinary.py) with the in-memory roster."""

from __future__ import annotations

import asyncio

import pytest
from kilter.protocol import messages as m
from kilter.protocol.buffer import SimpleBuffer

from toxbridge import config
from toxbridge.contacts.book import parse as parse_book
from toxbridge.contacts.routes import Routes
from toxbridge.mail.milter import (
    BUFFER_SIZE,
    Envelope,
    MailFilter,
    MilterError,
    Session,
    postfix_negotiation,
    reply_code,
    start_server,
)
from toxbridge.mail.smtpreply import Reply
from toxbridge.ordinary import OrdinaryMail, auto_submitted


def packed(*messages: m.Message) -> bytes:
    buf = SimpleBuffer(BUFFER_SIZE)
    for message in messages:
        message.pack(buf)
    return buf[:].tobytes()


def unpacked(data: bytes) -> list[m.Message]:
    buf = SimpleBuffer(BUFFER_SIZE)
    buf[:] = data
    out = []
    while buf.filled:
        message, size = m.Message.unpack(buf)
        message.freeze()
        out.append(message)
        del buf[:size]
    return out


class Recorder(MailFilter):
    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
        self.seen: list[Envelope] = []

    async def recipient(self, envelope, recipient):
        return f"550 5.7.1 <{recipient}>: no" if recipient == self.refuse else None

    async def end_of_message(self, envelope):
        self.seen.append(envelope)
        return None


def session_of(mail_filter: MailFilter) -> tuple[Session, list[m.Message]]:
    session = Session(mail_filter)
    answers = unpacked(asyncio.run(session.feed(postfix_negotiation())))
    return session, answers


MAIL = [
    m.Macro(m.Stage.ENVELOPE_FROM, {"{auth_authen}": "nora"}),
    m.EnvelopeFrom(b"<nora@nora.test>", [b"SIZE=100"]),
    m.EnvelopeRecipient(b"<otto@otto.test>"),
    m.EnvelopeRecipient(b"<carl@world.test>"),
    m.Header("Subject", b" Plans"),
    m.Header("Auto-Submitted", b" no"),
    m.Macro(m.Stage.END_MESSAGE, {"i": "4F00A1"}),
    m.EndOfMessage(b""),
]


def test_negotiation_asks_only_for_the_envelope_and_the_header():
    _, (answer,) = session_of(Recorder())
    assert isinstance(answer, m.Negotiate) and answer.version == 6
    assert (
        m.ProtocolFlags.NO_BODY in answer.protocol_flags
        and m.ProtocolFlags.NO_CONNECT in answer.protocol_flags
    )
    assert m.ProtocolFlags.NO_HEADERS not in answer.protocol_flags
    assert m.ActionFlags.ADD_HEADERS in answer.action_flags  # where later work adds headers


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_a_mail_fed_at_every_split_gives_the_same_answers(chunk):
    recorder = Recorder(refuse="carl@world.test")
    session, _ = session_of(recorder)
    data = packed(*MAIL)
    answers: list[m.Message] = []
    for i in range(0, len(data), chunk):
        answers += unpacked(asyncio.run(session.feed(data[i : i + chunk])))
    kinds = [type(a).__name__ for a in answers]
    # MAIL, RCPT otto, RCPT carl (refused), two headers, end of message
    assert kinds == ["Continue", "Continue", "ReplyCode", "Continue", "Continue", "Continue"]
    refusal = answers[2]
    assert isinstance(refusal, m.ReplyCode) and bytes(refusal.content) == b"550 5.7.1 <carl@world.test>: no\0"
    (envelope,) = recorder.seen
    assert envelope.sender == "nora@nora.test" and envelope.recipients == ["otto@otto.test"]
    assert envelope.header("subject") == "Plans" and envelope.macros["i"] == "4F00A1"


def test_abort_starts_the_next_mail_afresh():
    recorder = Recorder()
    session, _ = session_of(recorder)
    asyncio.run(session.feed(packed(*MAIL[1:3])))
    assert asyncio.run(session.feed(packed(m.Abort()))) == b""
    asyncio.run(session.feed(packed(m.EnvelopeFrom(b"<>"), m.EndOfMessage(b""))))
    assert recorder.seen[0].sender == "" and recorder.seen[0].recipients == []


def test_pipelined_events_get_one_answer_each():
    session, _ = session_of(Recorder())
    data = packed(m.EnvelopeFrom(b"<a@b>"), m.EnvelopeRecipient(b"<c@d>"), m.EnvelopeRecipient(b"<e@f>"))
    assert [type(a) for a in unpacked(asyncio.run(session.feed(data)))] == [m.Continue] * 3


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x00\x00\x02Z\x00", b"\x00\x00\x00\x01\x00", b"\x00\x00\x00\x03Lx\x00"],
    ids=["unknown-command", "command-zero", "header-without-value"],
)
def test_garbage_ends_the_connection(garbage):
    session, _ = session_of(Recorder())
    with pytest.raises(MilterError):
        asyncio.run(session.feed(garbage))


def test_a_message_larger_than_the_buffer_is_never_waited_for():
    session, _ = session_of(Recorder())
    header = (BUFFER_SIZE * 4).to_bytes(4, "big") + b"L"

    async def feed_all():
        await session.feed(header)
        while True:
            await session.feed(b"x" * 65536)

    with pytest.raises(MilterError, match="larger than"):
        asyncio.run(feed_all())


def test_reply_code_only_takes_error_replies():
    assert bytes(reply_code("451 4.3.0 100% busy").content) == b"451 4.3.0 100%% busy\0"
    for bad in ("250 ok", "55 x", "550x", ""):
        with pytest.raises(ValueError):
            reply_code(bad)


CONFIG = """\
state_dir: /var/lib/tb
ordinary_mail: notify
users:
  - {mailbox: nora, address: nora@nora.test}
  - {mailbox: ned, address: ned@nora.test, ordinary_mail: allow}
  - {mailbox: nell, address: nell@nora.test, ordinary_mail: refuse}
"""
BOOK = """\
- name: Otto
  addresses: [otto@otto.test]
  tox_id: "%s"
""" % ("ab" * 32)


@pytest.fixture
def policy(roster):
    cfg = config.parse(CONFIG)
    routes = Routes.of(cfg, parse_book(BOOK, "contacts.yaml", cfg.mailboxes), roster)
    sent: list[tuple[str, list[str], bytes]] = []

    async def deliver(endpoint, sender, recipients, message, lhlo, timeout):
        sent.append((sender, recipients, message))
        return [Reply(250, "2.0.0 Saved")]

    ordinary = OrdinaryMail(cfg, routes, deliver)
    return ordinary, sent


def envelope(sender: str, *recipients: str, headers=(), login: str = "") -> Envelope:
    macros = {"i": "QID", **({"{auth_authen}": login} if login else {})}
    return Envelope(sender, list(recipients), list(headers), macros)


def test_who_leaves_by_ordinary_mail(policy):
    ordinary, _ = policy
    assert ordinary.leaves_by_ordinary_mail("carl@world.test")
    assert not ordinary.leaves_by_ordinary_mail("otto@otto.test")  # a contact
    assert not ordinary.leaves_by_ordinary_mail("OTTO+x@otto.test")
    assert not ordinary.leaves_by_ordinary_mail("ned@nora.test")  # the household itself
    assert not ordinary.leaves_by_ordinary_mail("someone@nora.test")
    assert not ordinary.leaves_by_ordinary_mail("cd" * 32 + "@tox")


@pytest.mark.parametrize("login", ["", "nora", "NORA"])
def test_notify_sends_one_notice_from_the_null_sender_to_the_users_mailbox(policy, login):
    ordinary, sent = policy
    mail = envelope("nora@nora.test", "otto@otto.test", "carl@world.test", login=login)
    asyncio.run(ordinary.end_of_message(mail))
    ((sender, recipients, message),) = sent
    assert sender == "" and recipients == ["nora"]
    assert b"carl@world.test" in message and b"Auto-Submitted: auto-generated" in message


@pytest.mark.parametrize(
    "mail",
    [
        envelope("ned@nora.test", "carl@world.test"),  # allow
        envelope("", "carl@world.test"),  # a bounce
        envelope("stranger@world.test", "carl@world.test"),  # not a user
        envelope("nora@nora.test", "otto@otto.test", "ned@nora.test"),  # nobody by ordinary mail
        envelope("nora@nora.test", "carl@world.test", headers=[("AUTO-SUBMITTED", " auto-replied")]),
        envelope(
            "nora@nora.test", "carl@world.test", headers=[("Auto-Submitted", "auto-generated (notice)")]
        ),
        envelope("nora@nora.test", "carl@world.test", login="ned"),  # ned in nora's name
        envelope("nora@nora.test", "carl@world.test", login="mallory"),  # a login that is no user
    ],
    ids=[
        "allow",
        "null-sender",
        "not-a-user",
        "no-ordinary",
        "auto-replied",
        "auto-generated",
        "another-users-name",
        "unknown-login",
    ],
)
def test_no_notice(policy, mail):
    ordinary, sent = policy
    asyncio.run(ordinary.end_of_message(mail))
    assert sent == []


def test_refuse_refuses_only_non_contacts_and_only_for_its_user(policy):
    ordinary, _ = policy
    nell = envelope("nell@nora.test")
    refusal = asyncio.run(ordinary.recipient(nell, "carl@world.test"))
    assert refusal is not None and refusal.startswith("550 5.7.1 <carl@world.test>: not a Tox contact")
    assert asyncio.run(ordinary.recipient(nell, "otto@otto.test")) is None
    assert asyncio.run(ordinary.recipient(nell, "nora@nora.test")) is None
    assert asyncio.run(ordinary.recipient(envelope("nora@nora.test"), "carl@world.test")) is None
    # the login decides whose choice it is: nell in nora's name is still refused, nora in nell's not
    assert asyncio.run(ordinary.recipient(envelope("nora@nora.test", login="nell"), "carl@world.test"))
    assert (
        asyncio.run(ordinary.recipient(envelope("nell@nora.test", login="nora"), "carl@world.test")) is None
    )


def test_auto_submitted_values():
    def marked(value):
        return auto_submitted(envelope("a@b", headers=[("Auto-Submitted", value)]))

    assert not marked(" no") and not marked("No (a person wrote this)")
    assert marked("auto-replied") and marked(" auto-generated; owner-email=x@y") and marked("x-anything")
    assert not auto_submitted(envelope("a@b"))


class Held(Recorder):
    """A filter whose answer at the end of the message waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()
        self.go_on = asyncio.Event()

    async def end_of_message(self, envelope):
        self.reached.set()
        await self.go_on.wait()
        return await super().end_of_message(envelope)


def test_a_stop_lets_the_open_session_finish_its_mail_and_takes_no_new_one(tmp_path):
    """A session cut in a mail makes Postfix let that mail through unchecked (milter_default_action
    accept): the stop waits for it, and nobody new gets in meanwhile."""
    path = str(tmp_path / "milter")

    async def scenario():
        held = Held()
        server = await start_server(config.Endpoint(path=path), held)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(postfix_negotiation() + packed(*MAIL))
        await writer.drain()
        await held.reached.wait()
        draining = asyncio.create_task(server.drain(timeout=30))
        await asyncio.sleep(0)  # the drain has closed the listener
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_unix_connection(path)
        assert not draining.done()
        held.go_on.set()
        answers: list[m.Message] = []
        while sum(isinstance(a, m.Continue) for a in answers) < 6:  # MAIL, 2 RCPT, 2 headers, the end
            data = await reader.read(65536)
            assert data, "the session was cut before it answered the end of the message"
            answers += unpacked(data)
        writer.write(packed(m.Close()))
        await writer.drain()
        cut = await asyncio.wait_for(draining, 10)
        return held, answers, cut

    held, answers, cut = asyncio.run(scenario())
    assert [e.recipients for e in held.seen] == [["otto@otto.test", "carl@world.test"]]
    assert isinstance(answers[0], m.Negotiate)
    assert cut == 0


def test_a_stop_cuts_a_session_that_outlasts_the_drain(tmp_path):
    path = str(tmp_path / "milter")

    async def scenario():
        held = Held()
        server = await start_server(config.Endpoint(path=path), held)
        _, writer = await asyncio.open_unix_connection(path)
        writer.write(postfix_negotiation() + packed(*MAIL))
        await writer.drain()
        await held.reached.wait()
        return await server.drain(timeout=0.2)

    assert asyncio.run(scenario()) == 1


def test_the_routes_drain_fits_in_its_units_stop_timeout():
    from pathlib import Path

    from toxbridge.routes_daemon import MILTER_DRAIN_SECONDS

    unit = Path(__file__).parent.parent / "deploy" / "systemd" / "toxbridge-routes.service"
    (stop,) = [
        line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith("TimeoutStopSec=")
    ]
    assert MILTER_DRAIN_SECONDS + 2 <= float(stop)
