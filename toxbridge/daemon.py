"""The running bridge: identities on the Tox network, the LMTP listener for Postfix, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from . import profiles
from .bridge import Bridge
from .config import Config
from .identity import Identity
from .lmtp_in import make_server
from .receiver import prune_partials
from .store import DeliveryStore

log = logging.getLogger("toxbridge.daemon")

# How often an identity that lost the Tox network bootstraps again (toxcore needs a node to
# start from; a restart from savedata must bootstrap again too).
REBOOTSTRAP_SECONDS = 20.0
HOUSEKEEPING_SECONDS = 3600.0


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
    profiles.state_subdir(config.state_dir, "profiles")
    store = DeliveryStore(config.state_dir / "delivered.sqlite", config.dedup_days * 86400)
    identities: list[Identity] = []
    try:
        for user in config.users:
            identities.append(Identity.open(config, user, store))
        await _serve(config, identities, store)
    finally:
        store.close()
        for identity in identities:
            identity.save()
            if identity.node.running:
                await identity.node.stop()
            else:
                identity.node.close()


async def _serve(config: Config, identities: list[Identity], store: DeliveryStore) -> None:
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
    stalls = loop.create_task(_drop_stalled(config, identities))
    housekeeping = loop.create_task(_housekeeping(config, store))
    log.info("ready: LMTP for Postfix on %s, %d identities", listen, len(identities))
    notify("READY=1")
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        notify("STOPPING=1")
        rebootstrap.cancel()
        housekeeping.cancel()
        stalls.cancel()
        server.close()
        await server.wait_closed()
        for identity in identities:
            await identity.stop()


async def _housekeeping(config: Config, store: DeliveryStore) -> None:
    """Forget old delivery records and partial transfers nobody resumed: now, then hourly."""
    while True:
        forgotten = store.prune()
        removed = prune_partials(config.state_dir / "partial", config.partial_hours * 3600)
        if forgotten or removed:
            log.info("housekeeping: forgot %d delivery records, removed %d stale partial transfers", forgotten, removed)
        await asyncio.sleep(HOUSEKEEPING_SECONDS)


async def _drop_stalled(config: Config, identities: list[Identity]) -> None:
    """A friend that starts a transfer and then sends nothing must not hold its slot forever."""
    while True:
        await asyncio.sleep(min(5.0, config.transfer_stall_timeout))
        for identity in identities:
            identity.receiver.drop_stalled(config.transfer_stall_timeout)


async def _rebootstrap(identities: list[Identity]) -> None:
    while True:
        await asyncio.sleep(REBOOTSTRAP_SECONDS)
        for identity in identities:
            if identity.node.self_connection() == 0:
                identity.bootstrap()
