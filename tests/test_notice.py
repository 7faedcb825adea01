"""The notice builder (ordinary_mail: notify): envelope and header fields in, message bytes out."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given
from hypothesis import strategies as st

from toxbridge.mail.notice import QUOTE_LIMIT, SentMail, build, shown

MAIL = SentMail(
    sender="nora@nora.test",
    ordinary=("carl@world.test", "dora@world.test"),
    over_tox=("otto@otto.test",),
    subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?= from home",
    date="Tue, 01 Dec 2026 12:00:00 +0000",
    message_id="<abc@nora.test>",
    queue_id="4F00A1B2C3",
)


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def test_the_notice_names_both_kinds_of_recipients_and_quotes_subject_and_date():
    notice = parsed(build(MAIL, postmaster="postmaster@nora.test", hostname="pi.nora.test", now=0))
    assert notice["From"].addresses[0].addr_spec == "postmaster@nora.test"
    assert notice["To"] == "nora@nora.test"
    assert notice["Auto-Submitted"] == "auto-generated"
    assert notice["Subject"] == "Sent by ordinary e-mail: Grüße from home"
    assert notice["In-Reply-To"] == notice["References"] == "<abc@nora.test>"
    assert notice["Message-ID"].endswith("@pi.nora.test>")
    assert notice["Date"] == "Thu, 01 Jan 1970 00:00:00 -0000"
    text = notice.get_content().replace("\r\n", "\n")
    ordinary, _, tox = text.partition("got it over Tox")
    assert "2 recipients by ordinary e-mail" in ordinary
    assert "    carl@world.test\n    dora@world.test\n" in ordinary and "otto" not in ordinary
    assert "    otto@otto.test\n" in tox and "carl" not in tox
    assert 'Your mail "Grüße from home" of Tue, 01 Dec 2026 12:00:00 +0000' in text
    assert "can read it" in text and "toxbridge invite" in text and "toxbridge contacts add" in text
    assert "4F00A1B2C3" in text


def test_only_ordinary_recipients_no_subject_no_message_id():
    mail = SentMail("nora@nora.test", ("carl@world.test",), (), None, None, None)
    notice = parsed(build(mail, postmaster="postmaster@nora.test", hostname="h"))
    assert notice["Subject"] == "Sent by ordinary e-mail"
    assert notice["In-Reply-To"] is None and notice["References"] is None
    text = notice.get_content().replace("\r\n", "\n")
    assert "Your mail (no subject) went to 1 recipient by ordinary e-mail" in text
    assert "over Tox, encrypted" not in text


def test_a_hostile_subject_cannot_add_header_fields_or_lines():
    mail = SentMail(
        "nora@nora.test",
        ("carl@world.test",),
        (),
        "hi\r\nBcc: everyone@example.org\r\n\r\nfake body",
        "x\nX-Injected: 1",
        "<a@b>\r\nX-Evil: 1",
    )
    data = build(mail, postmaster="postmaster@nora.test", hostname="h")
    header = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in header and b"\r\nX-Injected" not in header and b"\r\nX-Evil" not in header
    notice = parsed(data)
    assert notice["In-Reply-To"] is None  # not one clean message id: not used
    assert "\n" not in notice["Subject"]


@given(st.text(max_size=500))
def test_shown_is_one_printable_bounded_line(raw):
    text = shown(raw)
    assert len(text) <= QUOTE_LIMIT
    assert all(c.isprintable() for c in text)


def test_the_body_is_never_quoted():
    """The builder is never given the body: SentMail has no field for it."""
    assert "body" not in SentMail.__dataclass_fields__
