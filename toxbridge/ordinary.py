"""Mail that leaves by ordinary e-mail: what the milter on Postfix's submission service does with
recipients who are not Tox contacts (the setting `ordinary_mail`, per household and per user).

- notify: Postfix sends it the ordinary way; at the end of the message the sender, if a user of
  this household, gets one notice in their INBOX naming those recipients (and those who got it
  over Tox). Delivered over Dovecot's LMTP with the null sender, so it never loops through
  Postfix, and nobody bounces a bounce.
- allow: nothing happens (the ordinary route, no notice).
- refuse: each such recipient is refused at RCPT (550 5.7.1 with the reason), so the mail
  client says so at once; the Tox recipients of the same mail still get it.

No notice for the null sender (bounces), for mail marked Auto-Submitted (auto-replies, other
robots, our own notices) or from a sender who is not a user. Whose mail it is: the login
(Postfix's `{auth_authen}` macro, the Dovecot user name) when there is one, so the setting is
the person's who sends, and a notice goes only to the owner of the envelope sender when that is
who logged in: a user who sends in another user's name (where submission does not forbid it,
reject_sender_login_mismatch) never puts notices into their mailbox. Which recipients are "over Tox" is
the socketmap's own answer (Routes.transport), so the notice says what Postfix does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .config import Config, Endpoint, User
from .contacts.routes import Routes
from .mail import lmtp_out
from .mail.milter import Envelope, MailFilter
from .mail.notice import SentMail, build
from .mail.smtpreply import Reply

log = logging.getLogger("toxbridge.ordinary")

# The notice is delivered before Postfix is answered at the end of the message: Postfix waits
# milter_content_timeout (300 s) for that answer, so Dovecot gets far less.
NOTICE_TIMEOUT = 30.0

Deliver = Callable[[Endpoint, str, list[str], bytes, str, float], Awaitable[list[Reply]]]


def refusal(recipient: str) -> str:
    return (
        f"550 5.7.1 <{recipient}>: not a Tox contact of this household; by ordinary e-mail the "
        "servers on its way could read it, and your ordinary_mail setting is refuse. Ask them "
        "onto Tox and add them with toxbridge contacts add"
    )


def auto_submitted(envelope: Envelope) -> bool:
    """RFC 3834: any value but `no` marks a mail no robot should answer (comments after the keyword)."""
    value = envelope.header("Auto-Submitted")
    if value is None:
        return False
    keyword = value.split("(", 1)[0].split(";", 1)[0].strip().lower()
    return keyword != "no"


class OrdinaryMail(MailFilter):
    def __init__(self, config: Config, routes: Routes, deliver: Deliver = lmtp_out.deliver) -> None:
        self.config = config
        self.routes = routes
        self._deliver = deliver

    def leaves_by_ordinary_mail(self, recipient: str) -> bool:
        """Neither over Tox (what the socketmap tells Postfix) nor to this household itself."""
        return not self.routes.transport(recipient) and not self.routes.household(recipient)

    def sender_of(self, envelope: Envelope) -> User | None:
        """The user who sends: whoever logged in, else the owner of the envelope sender."""
        login = envelope.macros.get("{auth_authen}", "")
        if login:
            return self.config.user_by_mailbox(login.lower())
        return self.config.user_by_address(envelope.sender) if envelope.sender else None

    def setting_for(self, envelope: Envelope) -> str:
        return self.config.ordinary_mail_of(self.sender_of(envelope))

    async def recipient(self, envelope: Envelope, recipient: str) -> str | None:
        if self.setting_for(envelope) == "refuse" and self.leaves_by_ordinary_mail(recipient):
            log.info(
                "%s: refused to=<%s>: not a Tox contact (ordinary_mail: refuse)",
                envelope.macros.get("i", "NOQUEUE"),
                recipient,
            )
            return refusal(recipient)
        return None

    async def end_of_message(self, envelope: Envelope) -> str | None:
        notice = self.notice_for(envelope)
        if notice is not None:
            await self._send(notice)
        return None

    def notice_for(self, envelope: Envelope) -> SentMail | None:
        """What the notice for this mail says, or None when it gets none."""
        if not envelope.sender:  # a bounce
            return None
        user = self.sender_of(envelope)
        if user is None or user != self.config.user_by_address(envelope.sender):
            return None  # not a user, or one sending in another's name
        if self.config.ordinary_mail_of(user) != "notify" or auto_submitted(envelope):
            return None
        ordinary = tuple(r for r in envelope.recipients if self.leaves_by_ordinary_mail(r))
        if not ordinary:
            return None
        return SentMail(
            sender=envelope.sender,
            ordinary=ordinary,
            over_tox=tuple(r for r in envelope.recipients if self.routes.transport(r)),
            subject=envelope.header("Subject"),
            date=envelope.header("Date"),
            message_id=envelope.header("Message-ID"),
            queue_id=envelope.macros.get("i", ""),
        )

    async def _send(self, mail: SentMail) -> None:
        user = self.config.user_by_address(mail.sender)
        assert user is not None  # notice_for made it only for a user
        postmaster = "postmaster@" + user.address.rpartition("@")[2]
        message = build(mail, postmaster=postmaster, hostname=self.config.hostname)
        replies = await self._deliver(
            self.config.dovecot_lmtp, "", [user.mailbox], message, self.config.hostname, NOTICE_TIMEOUT
        )
        reply = replies[0]
        queue_id = mail.queue_id or "NOQUEUE"
        if reply.code == 250:
            log.info(
                "%s: notice to=<%s>, ordinary=%d, over_tox=%d, status=sent (%s)",
                queue_id,
                user.mailbox,
                len(mail.ordinary),
                len(mail.over_tox),
                reply,
            )
        else:  # the mail itself goes on: a notice never holds it
            log.warning(
                "%s: notice to=<%s>, status=failed (%s); the mail went out without it",
                queue_id,
                user.mailbox,
                reply,
            )
