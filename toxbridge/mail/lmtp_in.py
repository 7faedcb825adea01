"""The LMTP server Postfix hands outbound Tox mail to (aiosmtpd underneath).

What aiosmtpd gets wrong for LMTP, and how this module fixes it:
- after DATA it sends one reply; LMTP needs one per accepted recipient (RFC 2033). The handler
  returns them joined, and the few single-line errors aiosmtpd itself sends after DATA (too big,
  line too long) are repeated once per recipient, so Postfix's session never desynchronises;
- an unhandled exception becomes `500` (permanent); here it is `451 4.3.0` (Postfix retries);
- unknown MAIL/RCPT parameters get `555`; the DSN ones (RFC 3461) are accepted here, see below;
- `MAIL FROM:<>` is a syntax error there; here it is the null sender of a bounce or an
  auto-reply (RFC 5321 section 4.5.5), handed to the outbox as "";
- its DATA holds every line as an object of its own (4x the mail at its peak); here one buffer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session

from .smtpreply import Reply

log = logging.getLogger("toxbridge.lmtp_in")

# aiosmtpd takes an empty MAIL FROM for "no MAIL yet": the null sender is this stand-in inside the
# session (no address parses to it) and "" for the outbox.
NULL_SENDER = "<>"

TEMPFAIL = Reply(451, "4.3.0 internal error in toxbridge; Postfix will retry")

# DSN parameters (RFC 3461), by command, each with a check of its (upper-cased) value.
# They are accepted so that a client sending them is not refused with 555, but DSN is on purpose
# NOT announced in LHLO: Postfix then keeps the duty to notify, and on our 250 (which comes only
# after the peer's Dovecot took the mail) it sends the sender's NOTIFY=SUCCESS report itself.
# Announcing DSN would make Postfix drop that report (it assumes we relay and report on), and
# toxbridge writes no reports.
_DSN_PARAMS = {
    "MAIL": {
        "RET": lambda v: v in ("FULL", "HDRS"),
        "ENVID": lambda v: 0 < len(v) <= 100 and _is_xtext(v),
    },
    "RCPT": {
        "NOTIFY": lambda v: (
            v == "NEVER" or (v != "" and set(v.split(",")) <= {"SUCCESS", "FAILURE", "DELAY"})
        ),
        "ORCPT": lambda v: ";" in v and v.partition(";")[0].isalnum() and _is_xtext(v.partition(";")[2]),
    },
}


def _is_xtext(value: str) -> bool:
    return value != "" and len(value) <= 500 and all("!" <= c <= "~" and c != "=" for c in value)


class Outbox(Protocol):
    """What the LMTP server asks of the rest of the bridge."""

    def check_sender(self, address: str) -> Reply: ...
    def check_recipient(self, sender: str, address: str) -> Reply: ...
    async def send(self, sender: str, recipients: list[str], message: bytes) -> list[Reply]: ...


class BridgeLMTP(LMTP):
    """aiosmtpd's LMTP with per-recipient replies also on its own DATA errors, and DSN parameters."""

    _command = ""  # the MAIL or RCPT command being parsed, for _getparams

    async def smtp_MAIL(self, arg) -> None:
        self._command = "MAIL"
        try:
            await super().smtp_MAIL(arg)
        finally:
            self._command = ""

    async def smtp_RCPT(self, arg) -> None:
        self._command = "RCPT"
        try:
            await super().smtp_RCPT(arg)
        finally:
            self._command = ""

    def _getaddr(self, arg):
        """aiosmtpd's address parser, plus the null reverse-path `<>` of MAIL (never of RCPT)."""
        rest = arg.lstrip()
        if self._command == "MAIL" and rest.startswith("<>"):
            rest = rest[2:]
            return (NULL_SENDER, rest) if rest[:1] in ("", " ") else (None, None)
        return super()._getaddr(arg)

    def _getparams(self, params):
        """aiosmtpd's parameter parser, minus the valid DSN parameters of this command (an
        invalid value makes the whole command a 501 syntax error)."""
        result = super()._getparams(params)
        if result is None:
            return None
        for name, valid in _DSN_PARAMS.get(self._command, {}).items():
            if name in result:
                value = result.pop(name)
                if not isinstance(value, str) or not valid(value):
                    return None
        return result

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading into one buffer: its own keeps every line as a bytearray of
        its own (measured: a 25 MiB mail cost the bridge 99 MiB at its peak, 4x), this one
        holds the mail once, twice for the moment it becomes bytes. Replies and limits as there."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert envelope is not None  # aiosmtpd makes one per session before any command
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        body = bytearray()
        size, too_much, too_long, in_long_line = 0, False, False, False
        while self.transport is not None:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                self._writer.close()  # the connection went away in the middle of DATA
                raise
            except asyncio.LimitOverrunError as e:  # a line longer than the stream limit
                await self._reader.read(e.consumed)
                too_long, in_long_line = True, True
                body = bytearray()
                continue
            if in_long_line:  # the tail of an overlong line, never the end of DATA
                in_long_line = False
                continue
            if line == b".\r\n":
                break
            size += len(line)
            too_much = too_much or bool(self.data_size_limit and size > self.data_size_limit)
            too_long = too_long or len(line) > self.line_length_limit
            if too_much or too_long:
                body = bytearray()  # keep reading to the end, keep nothing
            else:
                body += memoryview(line)[1:] if line.startswith(b".") else line
        if too_long or too_much:
            await self.push(
                "500 Line too long (see RFC5321 4.5.3.1.6)" if too_long else "552 Error: Too much mail data"
            )
            self._set_post_data_state()
            return
        content = bytes(body)
        del body
        # The wait for the answer counts from the end of DATA, as Postfix's lmtp_data_done_timeout.
        self._reset_timeout()
        envelope.content = envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def push(self, status) -> None:
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        rcpts = len(self.envelope.rcpt_tos) if self.envelope else 0
        if rcpts > 1 and text.startswith(("552 Error: Too much mail data", "500 Line too long")):
            reply = "552 5.3.4 message too big" if text.startswith("552") else "554 5.6.0 line too long"
            status = "\r\n".join([reply] * rcpts)
        elif text.startswith(("552 Error: Too much mail data", "552 Error: message size exceeds")):
            status = "552 5.3.4 message too big"  # the second is SIZE= at MAIL, before any data
        await super().push(status)


class PostfixHandler:
    """aiosmtpd handler hooks: checks at MAIL and RCPT, the real outcome after DATA."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str, options):
        reply = self._outbox.check_sender(_reverse_path(address))
        if reply.code == 250:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return _ascii(reply)

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, options):
        assert envelope.mail_from is not None  # aiosmtpd takes RCPT only after MAIL
        reply = self._outbox.check_recipient(_reverse_path(envelope.mail_from), address)
        if reply.code == 250:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return _ascii(reply)

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        recipients = list(envelope.rcpt_tos)
        # aiosmtpd calls DATA's hook only after MAIL and with the message read (smtp_DATA above).
        assert envelope.mail_from is not None and isinstance(envelope.original_content, bytes)
        try:
            replies = await self._outbox.send(
                _reverse_path(envelope.mail_from), recipients, envelope.original_content
            )
            if len(replies) != len(recipients):
                raise RuntimeError(f"{len(replies)} replies for {len(recipients)} recipients")
        except Exception:
            log.exception("sending failed; telling Postfix to retry")
            replies = [TEMPFAIL] * len(recipients)
        return "\r\n".join(_ascii(r) for r in replies)

    async def handle_exception(self, error: Exception) -> str:
        log.error("LMTP session error: %s: %s", type(error).__name__, error)
        return str(TEMPFAIL)


def _reverse_path(mail_from: str) -> str:
    """The envelope sender as the outbox knows it: "" for the null sender."""
    return "" if mail_from == NULL_SENDER else mail_from


def _ascii(reply: Reply) -> str:
    """One reply line, printable ASCII only (the peer's text may carry anything)."""
    text = "".join(c if " " <= c <= "~" else "?" for c in reply.text)
    return f"{reply.code} {text}"


def make_server(outbox: Outbox, hostname: str, max_size: int, timeout: float = 660.0):
    """A protocol factory for loop.create_server / create_unix_server; `timeout` is how long a
    session may stay silent (the config's lmtp_timeout)."""
    handler = PostfixHandler(outbox)

    def factory():
        return BridgeLMTP(
            handler,
            hostname=hostname,
            ident="toxbridge",
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=timeout,
        )

    return factory
