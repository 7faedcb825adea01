"""The notice a sender gets when their mail leaves by ordinary e-mail (ordinary_mail: notify).

A pure function: what the milter saw of the mail (envelope, a few header fields) in, the
notice's bytes out. It quotes the mail's Subject, Date and recipients, never its body; it is
marked `Auto-Submitted: auto-generated` (RFC 3834), so no vacation responder answers it and
the milter never notices a notice; it goes straight into the sender's INBOX over Dovecot's LMTP,
never through Postfix.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import SMTP

# A quoted header value is shown, never trusted: one line, no control characters, bounded.
QUOTE_LIMIT = 200


@dataclass(frozen=True)
class SentMail:
    """What the notice says about one mail."""

    sender: str  # the envelope sender: a user of this household, who gets the notice
    ordinary: tuple[str, ...]  # recipients the mail reaches by ordinary e-mail
    over_tox: tuple[str, ...]  # recipients it reaches over Tox
    subject: str | None  # the raw header values, as Postfix passed them
    date: str | None
    message_id: str | None
    queue_id: str = ""


def shown(raw: str | None) -> str:
    """A header value as a person reads it: RFC 2047 words decoded, one printable line."""
    if raw is None:
        return ""
    try:
        text = str(make_header(decode_header(raw)))
    except (ValueError, LookupError):  # a broken encoded word or an unknown charset: as it came
        text = raw
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1] + "…"


def build(mail: SentMail, *, postmaster: str, hostname: str, now: float | None = None) -> bytes:
    """The notice for `mail`, From `postmaster`, To its sender."""
    subject = shown(mail.subject)
    notice = EmailMessage(policy=SMTP)
    notice["From"] = email.utils.formataddr(("toxbridge", postmaster))
    notice["To"] = mail.sender
    notice["Subject"] = f"Sent by ordinary e-mail: {subject}" if subject else "Sent by ordinary e-mail"
    notice["Date"] = email.utils.formatdate(now, localtime=False)
    notice["Message-ID"] = email.utils.make_msgid("toxbridge-notice", domain=hostname)
    notice["Auto-Submitted"] = "auto-generated"
    original_id = shown(mail.message_id)
    if original_id.startswith("<") and original_id.endswith(">") and " " not in original_id:
        notice["In-Reply-To"] = original_id
        notice["References"] = original_id
    notice.set_content(_text(mail, subject))
    return notice.as_bytes()


def _text(mail: SentMail, subject: str) -> str:
    which = f'Your mail "{subject}"' if subject else "Your mail (no subject)"
    if mail.date:
        which += f" of {shown(mail.date)}"
    lines = [
        f"{which} went to {_count(mail.ordinary)} by ordinary e-mail, not over Tox:",
        "",
        *(f"    {r}" for r in mail.ordinary),
        "",
        "Ordinary e-mail travels from mail server to mail server. Each of them (this household's",
        "provider, the recipient's, and any in between) can read it and keep a copy.",
    ]
    if mail.over_tox:
        lines += [
            "",
            f"{_count(mail.over_tox).capitalize()} got it over Tox, encrypted from this household to theirs:",
            "",
            *(f"    {r}" for r in mail.over_tox),
        ]
    lines += [
        "",
        "To reach someone over Tox next time, they need toxbridge (or a Tox client) of their own.",
        "Send them your Tox ID: `toxbridge invite YOURNAME` prints a text to send. When they send",
        "theirs, add them to this household's contacts:",
        "",
        "    toxbridge contacts add NAME THEIR-TOX-ID their@address",
        "",
        "Your mail itself was sent unchanged; this notice quotes only its subject, date and",
        "recipients. One notice per mail. (Setting: ordinary_mail in toxbridge.yaml; allow",
        "sends such mail without a notice, refuse stops it.)",
    ]
    if mail.queue_id:
        lines += ["", f"Postfix queue ID: {mail.queue_id}"]
    return "\n".join(lines) + "\n"


def _count(recipients: tuple[str, ...]) -> str:
    return "1 recipient" if len(recipients) == 1 else f"{len(recipients)} recipients"
