"""The LMTP server Postfix hands outbound Tox mail to (aiosmtpd underneath).

What aiosmtpd gets wrong for LMTP, and how this module fixes it:
- after DATA it sends one reply; LMTP needs one per accepted recipient (RFC 2033). The handler
  returns them joined, and the few single-line errors aiosmtpd itself sends after DATA (too big,
  line too long) are repeated once per recipient, so Postfix's session never desynchronises;
- an unhandled exception becomes `500` (permanent); here it is `451 4.3.0` (Postfix retries).
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session

from .wire import Reply

log = logging.getLogger("toxbridge.lmtp_in")

TEMPFAIL = Reply(451, "4.3.0 internal error in toxbridge; Postfix will retry")


class Outbox(Protocol):
    """What the LMTP server asks of the rest of the bridge."""

    def check_sender(self, address: str) -> Reply: ...
    def check_recipient(self, sender: str, address: str) -> Reply: ...
    async def send(self, sender: str, recipients: list[str], message: bytes) -> list[Reply]: ...


class BridgeLMTP(LMTP):
    """aiosmtpd's LMTP with per-recipient replies also on its own DATA errors."""

    async def push(self, status) -> None:
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        rcpts = len(self.envelope.rcpt_tos) if self.envelope else 0
        if rcpts > 1 and text.startswith(("552 Error: Too much mail data", "500 Line too long")):
            reply = "552 5.3.4 message too big" if text.startswith("552") else "554 5.6.0 line too long"
            status = "\r\n".join([reply] * rcpts)
        elif text.startswith("552 Error: Too much mail data"):
            status = "552 5.3.4 message too big"
        await super().push(status)


class PostfixHandler:
    """aiosmtpd handler hooks: checks at MAIL and RCPT, the real outcome after DATA."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str, options):
        reply = self._outbox.check_sender(address)
        if reply.code == 250:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return _ascii(reply)

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, options):
        reply = self._outbox.check_recipient(envelope.mail_from, address)
        if reply.code == 250:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return _ascii(reply)

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        recipients = list(envelope.rcpt_tos)
        try:
            replies = await self._outbox.send(envelope.mail_from, recipients, envelope.original_content)
            if len(replies) != len(recipients):
                raise RuntimeError(f"{len(replies)} replies for {len(recipients)} recipients")
        except Exception:
            log.exception("sending failed; telling Postfix to retry")
            replies = [TEMPFAIL] * len(recipients)
        return "\r\n".join(_ascii(r) for r in replies)

    async def handle_exception(self, error: Exception) -> str:
        log.error("LMTP session error: %s: %s", type(error).__name__, error)
        return str(TEMPFAIL)


def _ascii(reply: Reply) -> str:
    """One reply line, printable ASCII only (the peer's text may carry anything)."""
    text = "".join(c if " " <= c <= "~" else "?" for c in reply.text)
    return f"{reply.code} {text}"


def make_server(outbox: Outbox, hostname: str, max_size: int):
    """A protocol factory for loop.create_server / create_unix_server."""
    handler = PostfixHandler(outbox)

    def factory():
        return BridgeLMTP(
            handler,
            hostname=hostname,
            ident="toxbridge",
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
        )

    return factory
