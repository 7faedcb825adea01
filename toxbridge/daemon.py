"""The running bridge: identities on the Tox network, the LMTP listener for Postfix, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from . import contacts, profiles, socketmap
from .bridge import Bridge
from .config import Config
from .contacts import ContactsError
from .identity import Identity
from .lmtp_in import make_server
from .receiver import prune_partials
from .roster import Roster
from .routes import Routes
from .store import DeliveryStore

log = logging.getLogger("toxbridge.daemon")

# How often an identity that lost the Tox network bootstraps again (toxcore needs a node to
# start from; a restart from savedata must bootstrap again too).
REBOOTSTRAP_SECONDS = 20.0
HOUSEKEEPING_SECONDS = 3600.0
# How often the contacts file is checked for changes (a stat; reread only when it changed).
CONTACTS_POLL_SECONDS = 1.0
# The master.cf service that carries mail to the bridge (deploy/postfix/master.cf.toxbridge).
POSTFIX_SERVICE = "toxbridge"


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
    mailboxes = tuple(u.mailbox for u in config.users)
    try:
        book = contacts.load(config.contacts, mailboxes)
    except ContactsError as e:
        # Not an empty book instead: Postfix would route contacts' mail the normal way, off Tox.
        raise StartupError(f"{e} (fix the contacts file; toxbridge does not start without its contacts)") from None
    store = DeliveryStore(config.state_dir / "delivered.sqlite", config.dedup_days * 86400)
    routes = Routes(book, Roster(config.state_dir / "roster.sqlite"), tuple(u.address for u in config.users))
    identities: list[Identity] = []
    try:
        for user in config.users:
            identities.append(Identity.open(config, user, store, routes))
        await _serve(config, identities, store, routes)
    finally:
        store.close()
        routes.roster.close()
        for identity in identities:
            identity.save()
            if identity.node.running:
                await identity.node.stop()
            else:
                identity.node.close()


async def _listen(key: str, listen, start):
    try:
        return await start()
    except OSError as e:
        raise StartupError(f"cannot listen for Postfix on {listen} ({key}): {e.strerror} "
                           f"(another toxbridge running? change {key})") from None


async def _serve(config: Config, identities: list[Identity], store: DeliveryStore, routes: Routes) -> None:
    loop = asyncio.get_running_loop()
    for identity in identities:
        identity.bootstrap()
        identity.node.start()
        identity.follow_contacts()
        log.info("%s: Tox ID %s", identity.user.mailbox, identity.node.address.hex().upper())
    factory = make_server(Bridge(identities, routes), config.hostname, config.max_message_size)
    listen = config.lmtp_listen
    if listen.path:
        server = await _listen("lmtp_listen", listen, lambda: loop.create_unix_server(factory, listen.path))
    else:
        server = await _listen("lmtp_listen", listen, lambda: loop.create_server(factory, listen.host, listen.port))
    nexthop = f"{POSTFIX_SERVICE}:unix:{listen.path}" if listen.path else f"{POSTFIX_SERVICE}:inet:{listen.host}:{listen.port}"
    transport = {"transport": lambda key: nexthop if routes.transport(key) else None}
    tables = await _listen("socketmap_listen", config.socketmap_listen,
                           lambda: socketmap.start_server(config.socketmap_listen, transport))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [loop.create_task(job) for job in (
        _rebootstrap(identities), _drop_stalled(config, identities), _housekeeping(config, store),
        _follow_contacts_file(config, routes, identities))]
    log.info("ready: LMTP for Postfix on %s, socketmap on %s, %d identities, %d contacts",
             listen, config.socketmap_listen, len(identities), len(routes.book.contacts))
    notify("READY=1")
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        notify("STOPPING=1")
        for task in tasks:
            task.cancel()
        for listener in (server, tables):
            listener.close()
            await listener.wait_closed()
        for identity in identities:
            await identity.stop()


async def _follow_contacts_file(config: Config, routes: Routes, identities: list[Identity]) -> None:
    """Reread the contacts file when it changes; a broken edit keeps the contacts as they were."""
    mailboxes = tuple(u.mailbox for u in config.users)
    seen = _file_state(config.contacts)
    while True:
        await asyncio.sleep(CONTACTS_POLL_SECONDS)
        state = _file_state(config.contacts)
        if state == seen:
            continue
        seen = state
        try:
            book = contacts.load(config.contacts, mailboxes)
        except ContactsError as e:
            log.error("contacts not reloaded, the previous ones stay in use: %s", e)
            continue
        routes.book = book
        log.info("contacts reloaded from %s: %d entries", config.contacts, len(book.contacts))
        for identity in identities:
            identity.follow_contacts()


def _file_state(path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


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
