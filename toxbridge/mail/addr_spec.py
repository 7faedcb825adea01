"""Whether a string is one mail address (RFC 5321 Mailbox, RFC 6531 UTF-8 allowed). Pure.

A friend's envelope addresses end up in LMTP commands and in our own Authentication-Results; an
address that carries `;`, a comment, a line separator or a second address would write into
them. So the wire takes `local-part@domain` and nothing else: the local part a dot-atom or a
quoted string, the domain dot-separated labels or an address literal.
"""

from __future__ import annotations

import re
import unicodedata

MAX_LENGTH = 998  # one header line (RFC 5322 2.1.1); LMTP's own limits are far below Postfix's
_ATEXT = "\\-A-Za-z0-9!#$%&'*+/=?^_`{|}~"  # the hyphen escaped: it is inside a class
_DOT_ATOM = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
# qtext and quoted-pairs of printable characters; no space: LMTP commands split on it.
_QUOTED = re.compile(r'"(?:[!#-\[\]-~\u0080-\U0010ffff]|\\[!-~])*"')
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*|\[[!-Z^-~]+\]")
# Unicode that is no visible character: controls, format (zero-width), separators, private, unassigned.
_INVISIBLE = {"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp", "Zs"}


def is_addr_spec(address: str) -> bool:
    if not 0 < len(address) <= MAX_LENGTH or "@" not in address:
        return False
    if any(ord(c) > 0x7F and unicodedata.category(c) in _INVISIBLE for c in address):
        return False
    local, _, domain = address.rpartition("@")
    return bool((_DOT_ATOM.fullmatch(local) or _QUOTED.fullmatch(local)) and _DOMAIN.fullmatch(domain))


def as_pvalue(address: str) -> str:
    """The address as an RFC 8601 pvalue: as it is when it is a plain dot-atom address, else a
    quoted string."""
    local, _, domain = address.rpartition("@")
    if _DOT_ATOM.fullmatch(local) and _DOMAIN.fullmatch(domain) and address.isascii():
        return address
    return '"' + address.replace("\\", "\\\\").replace('"', '\\"') + '"'
