"""The running bridge: identities on the Tox network, the LMTP listener for Postfix, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from .bridge import Bridge
from .config import Config
from .identity import Identity
from .lmtp_in import make_server

log = logging.getLogger("toxbridge.daemon")

# How often an identity that lost the Tox network bootstraps again (toxcore needs a node to
# start from; a restart from savedata must bootstrap again too).
REBOOTSTRAP_SECONDS = 20.0


class StartupError(RuntimeError):
    """The bridge cannot start; the text says what and the likely fix."""


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


async def run(config: Config) -> None:
    identities = [Identity.open(config, user) for user in config.users]
    try:
        await _serve(config, identities)
    finally:
        for identity in identities:
            identity.save()
            if identity.node.running:
                await identity.node.stop()
            else:
                identity.node.close()


async def _serve(config: Config, identities: list[Identity]) -> None:
    loop = asyncio.get_running_loop()
    for identity in identities:
        identity.bootstrap()
        identity.node.start()
        log.info("%s: Tox ID %s", identity.user.mailbox, identity.node.address.hex().upper())
    factory = make_server(Bridge(identities), config.hostname, config.max_message_size)
    listen = config.lmtp_listen
    try:
        if listen.path:
            server = await loop.create_unix_server(factory, listen.path)
        else:
            server = await loop.create_server(factory, listen.host, listen.port)
    except OSError as e:
        raise StartupError(f"cannot listen for Postfix on {listen}: {e.strerror} "
                           "(another toxbridge running? change lmtp_listen)") from None
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rebootstrap = loop.create_task(_rebootstrap(identities))
    log.info("ready: LMTP for Postfix on %s, %d identities", listen, len(identities))
    notify("READY=1")
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        notify("STOPPING=1")
        rebootstrap.cancel()
        server.close()
        await server.wait_closed()
        for identity in identities:
            await identity.receiver.stop()


async def _rebootstrap(identities: list[Identity]) -> None:
    while True:
        await asyncio.sleep(REBOOTSTRAP_SECONDS)
        for identity in identities:
            if identity.node.self_connection() == 0:
                identity.bootstrap()
