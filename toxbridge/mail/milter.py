"""A milter server (Postfix's content-filter protocol, smtpd_milters): Postfix's submission service
shows the bridge each mail's envelope and header while the client is still connected, and the
bridge answers per recipient (continue, or a refusal with its own text) and at the end of the
message (where later work may add headers).

The protocol itself (framing, the state machine, which answer fits which event) is kilter.protocol's
(sans-I/O: bytes in a buffer, messages out); this module is the thin asyncio layer around it and
the `MailFilter` hooks a policy implements. Only what the hooks need is asked of Postfix: the
connect, HELO, end-of-header, body and unknown-command events are negotiated away, so a mail
costs one round trip per MAIL, RCPT, DATA and header and one at the end.

Whatever goes wrong in a session (garbage, a hook's bug, a message larger than the buffer) closes
that connection: Postfix then applies `milter_default_action` (accept, main.cf.toxbridge), so a
broken bridge never holds the household's ordinary mail.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from kilter.protocol import messages as m
from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.core import FilterMessage, FilterProtocol

from ..config import Endpoint
from .listen import Connections, close_connection

log = logging.getLogger("toxbridge.milter")

# Postfix sends at most 64 KiB of data per message unless a larger size is negotiated (we do not,
# and we ask for no body at all); a header field may be up to header_size_limit (100 KiB).
BUFFER_SIZE = 256 * 1024
READ_SIZE = 65536
# Postfix's own milter timeouts are 30 s (commands) and 300 s (content); a connection silent for
# longer than both is a stuck or foreign client.
IDLE_TIMEOUT = 600.0
MILTER_VERSION = 6
# What we never need to see: each saves a round trip per mail (or per body chunk). Not DATA:
# Postfix sends the DATA stage's macros anyway, a message that gets no answer, so the next one
# waited behind Nagle for our delayed ACK: +44 ms per mail (bench/ordinary.py); answering the
# DATA event costs a loopback round trip instead.
NOT_WANTED = (
    m.ProtocolFlags.NO_CONNECT
    | m.ProtocolFlags.NO_HELO
    | m.ProtocolFlags.NO_BODY
    | m.ProtocolFlags.NO_END_OF_HEADERS
    | m.ProtocolFlags.NO_UNKNOWN
)
# Header changes: the place where later work adds headers to outgoing mail.
ACTIONS = m.ActionFlags.ADD_HEADERS | m.ActionFlags.CHANGE_HEADERS


class MilterError(ValueError):
    """Postfix (or whoever connected) broke the protocol; the connection ends."""


@dataclass
class Envelope:
    """One mail as the filter sees it: the envelope so far, the header fields in order, and the
    macros Postfix sent (queue id `i`, `{auth_authen}`, …)."""

    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    macros: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The first field of that name (any case), unfolded, or None."""
        name = name.lower()
        return next((" ".join(v.split()) for n, v in self.headers if n.lower() == name), None)


class MailFilter:
    """The hooks; each returns None to continue or an SMTP reply line ("550 5.7.1 text") to refuse."""

    async def recipient(self, envelope: Envelope, recipient: str) -> str | None:
        return None

    async def end_of_message(self, envelope: Envelope) -> str | None:
        return None


def strip_brackets(address: str) -> str:
    """Postfix passes MAIL FROM and RCPT TO addresses as the client wrote them, in <…>."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    return address


def _text(value: bytes | memoryview) -> str:
    # Header values may carry 8-bit bytes (SMTPUTF8, or broken clients): keep them readable.
    return bytes(value).decode("utf-8", "replace")


def reply_code(line: str) -> m.ReplyCode:
    """A refusal with our own text: "550 5.7.1 words" (one line; a % is doubled, since the MTA
    may read the text as a format, as sendmail does)."""
    code = line[:3]
    if not (code.isdigit() and code[0] in "45" and line[3:4] == " "):
        raise ValueError(f"not an SMTP error reply: {line!r}")
    text = " ".join(line.split()).replace("%", "%%")
    return m.ReplyCode(text.encode("utf-8", "replace") + b"\0")


def postfix_negotiation() -> bytes:
    """What Postfix 3.7 sends first (version 6, every action and protocol step offered): a probe
    for `toxbridge status`, and the start of the tests' sessions."""
    buf = SimpleBuffer(64)
    m.Negotiate(MILTER_VERSION, m.ActionFlags(0x1FF), m.ProtocolFlags(0x1FFFFF)).pack(buf)
    return buf[:].tobytes()


class Session:
    """One connection's protocol state: `feed(bytes)` returns the bytes to answer (no I/O here
    except the awaited hooks)."""

    def __init__(self, mail_filter: MailFilter) -> None:
        self.filter = mail_filter
        self.protocol = FilterProtocol()
        self.inbox = SimpleBuffer(BUFFER_SIZE)
        self.outbox = SimpleBuffer(BUFFER_SIZE)
        self.envelope = Envelope()
        self.macros: dict[str, str] = {}
        self.closed = False

    async def feed(self, data: bytes) -> bytes:
        if len(data) > self.inbox.available:
            raise MilterError(f"a milter message larger than {BUFFER_SIZE} bytes")
        self.inbox[:] = data
        # One message at a time: the state machine wants each answer before the next event.
        events = self.protocol.read_from(self.inbox)
        while True:
            try:
                message = next(events)
            except StopIteration:
                break
            except (ValueError, TypeError, AssertionError, UnicodeDecodeError) as e:
                raise MilterError(f"{type(e).__name__}: {e}") from None
            message.freeze()  # copied out of the buffer, which moves on
            answer = await self._event(message)
            if answer is not None:
                self.protocol.write_to(self.outbox, answer)
        out = self.outbox[:].tobytes()
        del self.outbox[:]
        if self.inbox.available == 0:
            raise MilterError(f"a milter message larger than {BUFFER_SIZE} bytes")
        return out

    async def _event(self, message) -> FilterMessage | None:
        match message:
            case m.Negotiate():
                return m.Negotiate(
                    MILTER_VERSION,
                    ACTIONS & message.action_flags,
                    NOT_WANTED & message.protocol_flags,
                )
            case m.Macro():
                self.macros.update(message.macros)
                return None
            case m.EnvelopeFrom():
                self.envelope = Envelope(sender=strip_brackets(_text(message.sender)), macros=self.macros)
                return m.Continue()
            case m.EnvelopeRecipient():
                recipient = strip_brackets(_text(message.recipient))
                refusal = await self.filter.recipient(self.envelope, recipient)
                if refusal is not None:
                    return reply_code(refusal)
                self.envelope.recipients.append(recipient)
                return m.Continue()
            case m.Data():
                return m.Continue()
            case m.Header():
                self.envelope.headers.append((message.name, _text(message.value)))
                return m.Continue()
            case m.EndOfMessage():
                refusal = await self.filter.end_of_message(self.envelope)
                self.envelope = Envelope(macros=self.macros)
                return reply_code(refusal) if refusal is not None else m.Continue()
            case m.Abort():
                # The client gave up on this mail (RSET, QUIT): the next MAIL starts afresh.
                self.envelope = Envelope(macros=self.macros)
                return None
            case m.Close():
                self.closed = True
                return None
        # Events we negotiated away but an MTA sent anyway: let the mail through.
        return m.Continue() if self.protocol.needs_response(message) else None


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mail_filter: MailFilter) -> None:
    session = Session(mail_filter)
    try:
        while not session.closed:
            data = await asyncio.wait_for(reader.read(READ_SIZE), IDLE_TIMEOUT)
            if not data:
                return
            answer = await session.feed(data)
            if answer:
                writer.write(answer)
                await writer.drain()
    except MilterError as e:
        log.warning("milter client: %s; closing the connection (Postfix applies milter_default_action)", e)
    except TimeoutError:
        log.info("milter client idle for %.0f s; closing the connection", IDLE_TIMEOUT)
    except ConnectionError:
        pass
    except Exception:  # a hook's bug: this mail goes on as if the bridge were down
        log.exception("milter session failed; closing the connection (Postfix applies milter_default_action)")
    finally:
        await close_connection(writer)


class MilterServer:
    """The listening socket and the sessions it started. A stop lets the sessions open then run to
    their end: Postfix keeps a milter connection for one SMTP session, and a session cut in the
    middle of a mail makes Postfix apply milter_default_action (accept) to it: the mail would
    leave without its notice, or despite ordinary_mail: refuse."""

    def __init__(self, mail_filter: MailFilter) -> None:
        self._connections = Connections(lambda reader, writer: _serve(reader, writer, mail_filter), "milter")

    async def start(self, endpoint: Endpoint) -> None:
        await self._connections.listen(endpoint)

    def close(self) -> None:
        """No new sessions; the open ones go on."""
        self._connections.server.close()

    async def drain(self, timeout: float) -> int:
        """Close, wait up to `timeout` for the open sessions to end, cut the rest; how many were cut."""
        self.close()
        if not self._connections.open:
            return 0
        _, cut = await asyncio.wait(set(self._connections.open), timeout=timeout)
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
        return len(cut)


async def start_server(endpoint: Endpoint, mail_filter: MailFilter) -> MilterServer:
    """Serve the milter protocol on `endpoint` (inet host:port, or a unix socket path)."""
    server = MilterServer(mail_filter)
    await server.start(endpoint)
    return server
