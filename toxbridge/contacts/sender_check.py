"""Is a friend allowed to send as the addresses its mail claims? Pure functions, no I/O.

A mail from friend K may carry, as envelope sender and in From:, only `K@tox` (any spelling of
K's key or full ID) or addresses tied to K: by the contacts book, or learned from K's earlier
mail. An address tied to another key is a forgery. An address nobody claims is, by policy,
learned for K (trust on first use: after it, nobody else can claim it) or refused.
"""

from __future__ import annotations

import email.parser
import re
import email.policy
import email.utils
from dataclasses import dataclass
from typing import Callable

from ..address import AddressError, is_tox_address, parse_tox_address

PASS, FAIL = "pass", "fail"


@dataclass(frozen=True)
class Verdict:
    result: str  # pass | fail
    reason: str  # words for the Authentication-Results comment, the warning or the 550

    @property
    def ok(self) -> bool:
        return self.result == PASS


def from_addresses(message: bytes) -> list[str]:
    """The addresses in the message's From: header(s), lower case; [] when there is none."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")
    values = [str(v) for v in headers.get_all("From", [])]
    return [a.lower() for _, a in email.utils.getaddresses(values) if "@" in a]


def check(public_key: bytes, envelope_sender: str, from_header: list[str],
          claims: Callable[[str], tuple[str, set[bytes]]], learn_unclaimed: bool) -> Verdict:
    """claims(address) → (how it is tied: "contact"/"learned"/"", the keys it is tied to)."""
    addresses = list(dict.fromkeys(a.lower() for a in [envelope_sender, *from_header] if a))
    if not addresses:
        return Verdict(FAIL, "the mail names no sender at all")
    how_tied: list[str] = []
    new: list[str] = []
    for address in addresses:
        if is_tox_address(address):
            try:
                if parse_tox_address(address).public_key == public_key:
                    how_tied.append(f"{address} is the key itself")
                    continue
            except AddressError:
                pass
            return Verdict(FAIL, f"{address} is not the sending friend's own Tox address")
        how, keys = claims(address)
        if public_key in keys:
            how_tied.append(f"{address} by {how}")
        elif keys:
            return Verdict(FAIL, f"{address} belongs to another Tox {how or 'contact'}, not to the sending friend")
        elif learn_unclaimed:
            new.append(address)
        else:
            return Verdict(FAIL, f"{address} is not tied to the sending friend's Tox key by any contact")
    reason = "; ".join(how_tied + [f"{a} first seen from this key, learned" for a in new])
    return Verdict(PASS, reason)


OWN_HEADERS = (b"x-toxbridge-id", b"x-toxbridge-warning")


def strip_trust_headers(message: bytes, authserv_id: str) -> bytes:
    """Remove headers a friend must not be able to pre-set: our own X-Toxbridge-* and any
    Authentication-Results in our name (RFC 8601 §5). Everything else stays byte for byte."""
    end = header_end(message)
    fields: list[list[bytes]] = []  # each header field with its continuation lines
    for line in message[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    ours = authserv_id.lower().encode()
    kept = [lines for lines in fields if not _is_trust_header(b"".join(lines), ours)]
    return b"".join(line for lines in kept for line in lines) + message[end:]


_COMMENT = re.compile(rb"\([^()]*\)")


def _is_trust_header(field: bytes, authserv_id: bytes) -> bool:
    name, _, value = field.partition(b":")
    name = name.strip().lower()
    if name in OWN_HEADERS:
        return True
    if name != b"authentication-results":
        return False
    # RFC 8601: [CFWS] authserv-id [CFWS version] ";" ... — unfold, drop comments, first word
    words = _COMMENT.sub(b" ", value.split(b";", 1)[0]).split()
    return bool(words) and words[0].lower() == authserv_id


def header_end(message: bytes) -> int:
    """Where the header fields end: the offset of the blank line after them (its line end
    excluded), or the end when there is no blank line."""
    candidates = [i for i in (message.find(b"\r\n\r\n"), message.find(b"\n\n")) if i >= 0]
    if message.startswith((b"\r\n", b"\n")):
        return 0
    if not candidates:
        return len(message)
    first = min(candidates)
    return first + (2 if message[first:first + 2] == b"\r\n" else 1)
