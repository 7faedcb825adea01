"""systemd's notify protocol (Type=notify), spoken by both services."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("toxbridge.systemd")


def notify(state: str) -> None:
    """sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd gave one."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), path)
        except OSError as e:
            log.warning("cannot notify systemd: %s", e)
