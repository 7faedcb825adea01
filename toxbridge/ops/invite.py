"""An invitation: the text a user sends a friend to be added as a Tox contact."""

from __future__ import annotations

import shlex


def invitation(address: str, tox_id: str) -> str:
    """What `toxbridge invite` prints: a text the user sends a friend, by mail or on paper: the
    address, the Tox ID and the command that adds them as a contact."""
    name = address.partition("@")[0]
    return (
        "Let's exchange e-mail over Tox: mail then goes from my household's server straight\n"
        "to yours, encrypted on the way, with no mail provider in between.\n\n"
        f"My address: {address}\n"
        f"My Tox ID:  {tox_id}\n\n"
        f"If your household runs toxbridge, add me as a contact (any name will do for {name}):\n\n"
        f"    toxbridge contacts add {shlex.quote(name)} {tox_id} {shlex.quote(address)}\n\n"
        f"Your mail to {address} then goes over Tox. Send me your own invitation\n"
        "(toxbridge invite YOUR-MAILBOX) and I will add you too.\n\n"
        "In a Tox app (qTox, aTox, Toxic, ...) you can add my Tox ID as a friend. That makes us\n"
        "Tox friends, but a Tox app does not carry e-mail: for that your household needs toxbridge.\n"
    )
