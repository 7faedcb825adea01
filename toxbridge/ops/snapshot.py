"""What the running daemon tells `toxbridge status` over the control socket: itself, and each
identity with its network and friends (ops/status.py judges it)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    from ..contacts.routes import Routes
    from ..outbound import Outbound
    from ..tox.identity import Identity

VIA = ("", "TCP", "UDP")  # by toxcore's connection status


def of_daemon(started: float, routes: Routes, outbound: Outbound, identities: list[Identity]) -> dict:
    return {
        "pid": os.getpid(),
        "started": started,
        "version": __version__,
        "contacts": len(routes.book.contacts),
        "in_flight": outbound.in_flight,
        "identities": [of_identity(i) for i in identities],
    }


def of_identity(identity: Identity) -> dict:
    node = identity.node
    friends = []
    for friend in node.friends():
        key = node.friend_public_key(friend)
        contact = identity.friends.contact(key)
        connection = node.friend_connection(friend)
        friends.append(
            {
                "key": key.hex(),
                "name": contact.name if contact else None,
                "online": connection != 0,
                "via": VIA[connection],
                "since": identity.online_since.get(key) if connection else identity.last_online(friend),
                "bridge": friend in identity.peers,
                "chat_app": identity.is_chat_app(key),
                "chat_cut_today": identity.chats.cut_today.get(key, ("", 0)),
            }
        )
    return {
        "mailbox": identity.user.mailbox,
        "address": identity.user.address,
        "tox_id": node.address.hex().upper(),
        "network": VIA[node.self_connection()],
        "network_since": identity.network_since,
        "friends": friends,
    }
