"""Is a friend allowed to send as the addresses its mail claims? Pure functions, no I/O.

A mail from friend K may carry, as envelope sender and in From:, only `K@tox` (any spelling of
K's key or full ID) or addresses tied to K: by the contacts book, or learned from K's earlier
mail. An address tied to another key is a forgery. An address nobody claims is, by policy,
learned for K (trust on first use: after it, nobody else can claim it) or refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..address import AddressError, is_tox_address, parse_tox_address

PASS, FAIL = "pass", "fail"
# The key of an address no friend may claim: the household's own, or mailed by the ordinary
# route (no friend's key is empty).
NOT_A_FRIENDS = b""


@dataclass(frozen=True)
class Verdict:
    result: str  # pass | fail
    reason: str  # words for the Authentication-Results comment, the warning or the 550

    @property
    def ok(self) -> bool:
        return self.result == PASS


def check(
    public_key: bytes,
    envelope_sender: str,
    from_header: list[str],
    claims: Callable[[str], tuple[str, set[bytes]]],
    learn_unclaimed: bool,
) -> Verdict:
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
        elif NOT_A_FRIENDS in keys:
            return Verdict(FAIL, f"{address} is no Tox friend's to claim: {how}")
        elif keys:
            return Verdict(
                FAIL, f"{address} belongs to another Tox {how or 'contact'}, not to the sending friend"
            )
        elif learn_unclaimed:
            new.append(address)
        else:
            return Verdict(FAIL, f"{address} is not tied to the sending friend's Tox key by any contact")
    reason = "; ".join(how_tied + [f"{a} first seen from this key, learned" for a in new])
    return Verdict(PASS, reason)
