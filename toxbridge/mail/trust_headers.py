"""The header fields that say what the receiving bridge verified: the ones it writes on a mail
that came over Tox, and the ones a friend must not be able to pre-set. Pure, no I/O.

Written: X-Toxbridge-Id (the payload's hash, by which Dovecot's Sieve drops a second copy,
deploy/dovecot), a warning when the sender is not verified, Received: and Authentication-Results:
with the friend's verified Tox key. Removed from what the friend sent: our own X-Toxbridge-* and
any Authentication-Results in our name (RFC 8601 section 5).
"""

from __future__ import annotations

import email.utils
import re

from .addr_spec import as_pvalue
from .headers import Header

OWN_FIELDS = ("X-Toxbridge-Id", "X-Toxbridge-Warning")
_COMMENT = re.compile(rb"\([^()]*\)")


def strip(header: Header, authserv_id: str) -> bytes:
    """The header's bytes without the fields only we may write; every other byte as it was."""
    ours = authserv_id.lower().encode()
    return header.without(
        f
        for f in header.fields
        if any(f.is_named(n) for n in OWN_FIELDS)
        or (f.is_named("Authentication-Results") and _authserv_id(f.value) == ours)
    )


def _authserv_id(value: bytes) -> bytes:
    # RFC 8601: [CFWS] authserv-id [CFWS version] ";" ... — unfolded, comments dropped, first word
    words = _COMMENT.sub(b" ", value.split(b";", 1)[0]).split()
    return words[0].lower() if words else b""


def stamp(
    hostname: str, address: str, peer_key: str, file_id: bytes, sender: str, result: str, reason: str
) -> bytes:
    """The fields the receiving bridge puts on top of a friend's mail for `address`: `result`
    (pass or fail, with `reason`) of the check of `sender` against the friend's Tox key."""
    date = email.utils.formatdate(localtime=True)
    warning = (
        ""
        if result == "pass"
        else (
            f"X-Toxbridge-Warning: the sender is NOT verified: {one_line(reason)}"
            f" (sent by Tox key {peer_key})\r\n"
        )
    )
    return (
        f"X-Toxbridge-Id: {file_id.hex()}\r\n"
        f"{warning}"
        f"Received: from tox (Tox key {peer_key})\r\n"
        f"\tby {hostname} (toxbridge) with TOX\r\n"
        f"\tfor <{address}>; {date}\r\n"
        f"Authentication-Results: {hostname}; x-tox={result}\r\n"
        f"\t({one_line(reason)})\r\n"
        f"\tsmtp.mailfrom={as_pvalue(sender) if sender else '<>'} x-tox.key={peer_key}\r\n"
    ).encode()


def one_line(text: str) -> str:
    """Friend-supplied words made safe for one header line and a comment: no line breaks, no
    parentheses, no backslash (it would escape the comment's closing parenthesis)."""
    return " ".join(text.replace("(", "[").replace(")", "]").replace("\\", "/").split())[:300]
