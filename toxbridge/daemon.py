"""The running bridge (`toxbridge run`): identities on the Tox network, the LMTP listener for
Postfix, the catch-up, the control socket, signals. What Postfix asks about routes (socketmap,
milter) is another process's, `toxbridge routes` (routes_daemon.py), so that ordinary mail never
waits on this one (design decision 12)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from .config import Config
from .contacts import follow
from .contacts.book import ContactBook, ContactsError
from .contacts.book import load as load_contacts
from .contacts.roster import Roster
from .contacts.routes import Routes
from .files import state_subdir
from .mail.listen import StartupError, start_listener, unix_socket
from .mail.lmtp_in import make_server
from .ops import control, snapshot
from .ops.systemd import notify
from .outbound import Outbound
from .tox.chat_store import ChatStore
from .tox.delivered import DeliveryStore
from .tox.identity import Identity
from .tox.pacing import Pacer, bucket_for
from .tox.partial import Partials

log = logging.getLogger("toxbridge.daemon")

# How often an identity that lost the Tox network bootstraps again (toxcore needs a node to
# start from; a restart from savedata must bootstrap again too).
REBOOTSTRAP_SECONDS = 20.0
HOUSEKEEPING_SECONDS = 3600.0
# How often the identities are asked which offline friends to search afresh (each is due every
# friend_search.REFRESH_SECONDS at most).
SEARCH_TICK_SECONDS = 1.0
# Off the Tox network this long: say so, with what to check (ToxSettings.offline_advice).
NO_NETWORK_WARNING_SECONDS = 60.0
# How often the STATUS= line for systemd is brought up to date.
STATUS_SECONDS = 5.0
# After stop_timeout the stop still saves the profiles, stops the toxcore nodes and closes the
# SQLite files: stop_timeout plus this must stay below TimeoutStopSec in
# deploy/systemd/toxbridge.service (tests/test_daemon_stop.py checks it), or systemd kills the
# bridge in the middle of it.
CLOSE_SECONDS = 5.0
__all__ = ["StartupError", "notify", "run"]


async def run(config: Config) -> None:
    state_subdir(config.state_dir, "profiles")
    mailboxes = config.mailboxes
    try:
        book = load_contacts(config.contacts, mailboxes)
    except ContactsError as e:
        # Not an empty book instead: Postfix would route contacts' mail the normal way, off Tox.
        raise StartupError(
            f"{e} (fix the contacts file; toxbridge does not start without its contacts)"
        ) from None
    store = DeliveryStore(config.state_dir / "delivered.sqlite", config.dedup_days * 86400)
    routes = Routes.of(config, book, Roster(config.state_dir / "roster.sqlite"))
    partials = Partials(
        state_subdir(config.state_dir, "partial"),
        config.partial_bytes_per_friend,
        config.partial_bytes_total,
        config.partial_min_free,
    )
    partials.scan()  # what an earlier run left counts against the caps
    chat_store = ChatStore(config.state_dir / "chat.sqlite")
    identities: list[Identity] = []
    # One pace for the whole bridge: every identity's mail leaves through the same uplink.
    limit = config.tox.upload_limit_kbit
    pacer = Pacer(bucket_for(limit)) if limit else None
    try:
        for user in config.users:
            identities.append(Identity.open(config, user, store, routes, partials, chat_store, pacer))
        nodes = {i.user.mailbox: i.node for i in identities}
        # A pairing another user learned serves a user whose own identity is that key's friend.
        routes.reaches = lambda mailbox, key: nodes[mailbox].friend_by_public_key(key) is not None
        await _serve(config, identities, store, routes, partials)
    finally:
        await _close(identities, store, routes.roster)
        chat_store.close()


async def _close(identities: list[Identity], store: DeliveryStore, roster: Roster) -> None:
    """The toxcore nodes first (their callbacks record deliveries and pairings), then the
    SQLite files they wrote to."""
    for identity in identities:
        identity.save()
        if identity.node.running:
            await identity.node.stop()
        else:
            identity.node.close()
    store.close()
    roster.close()


async def _serve(
    config: Config, identities: list[Identity], store: DeliveryStore, routes: Routes, partials: Partials
) -> None:
    loop = asyncio.get_running_loop()
    for identity in identities:
        identity.bootstrap()
        identity.node.start()
        identity.friends.follow_contacts()
        identity.end_friendships()  # removed while the bridge was down
        identity.friends.record_friends()  # friends no contact names, for `contacts list`
        identity.chats.start()  # chat messages an earlier run stored and did not deliver
        log.info("%s: Tox ID %s", identity.user.mailbox, identity.node.address.hex().upper())
    outbound = Outbound(identities, routes)
    factory = make_server(outbound, config.hostname, config.max_message_size, config.lmtp_timeout)
    listen = config.lmtp_listen
    if listen.path:
        server = await start_listener(
            "lmtp_listen", listen, lambda: loop.create_unix_server(factory, sock=unix_socket(listen.path))
        )
    else:
        log.warning(
            "lmtp_listen is a TCP port: every process on this host can send Tox mail as a household "
            "user through it; a unix socket (the default) lets only Postfix"
        )
        server = await start_listener(
            "lmtp_listen", listen, lambda: loop.create_server(factory, listen.host, listen.port)
        )
    started = time.time()

    controls = await control.start_server(
        control.socket_path(config.state_dir),
        {"status": lambda: snapshot.of_daemon(started, routes, outbound, identities)},
    )
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():  # the second one: no more waiting
            log.warning("%s again: exiting now; mail on its way is retried by Postfix", sig.name)
            os._exit(1)
        log.info("%s: stopping; a second one exits at once", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    tasks = [
        loop.create_task(job)
        for job in (
            _rebootstrap(config, identities),
            _drop_stalled(config, identities),
            _search_friends(identities),
            _housekeeping(config, store, partials),
            follow.follow(
                config,
                log,
                lambda book: _new_contacts(routes, identities, book),
                lambda: _end_friendships(identities),
            ),
            _report_status(identities),
        )
    ]
    log.info(
        "ready: LMTP for Postfix on %s, %d identities, %d contacts",
        listen,
        len(identities),
        len(routes.book.contacts),
    )
    notify("READY=1")
    try:
        await stop.wait()
    finally:
        notify("STOPPING=1")
        for listener in (server, controls):  # no new mail, no new questions
            listener.close()
        await _stop_serving(config.stop_timeout, outbound, identities, tasks)
        control.socket_path(config.state_dir).unlink(missing_ok=True)
        log.info("stopped")


async def _stop_serving(
    stop_timeout: float, outbound: Outbound, identities: list[Identity], tasks: list[asyncio.Task]
) -> None:
    """One deadline, stop_timeout from now: mail on its way out gets it, the daemon's own tasks
    end, deliveries to Dovecot get what is left of it (the stop fits in systemd's, see CLOSE_SECONDS)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stop_timeout
    cut = await outbound.drain(stop_timeout)
    if cut:
        log.warning(
            "stopped %d mail(s) on their way after %.0f s (stop_timeout); Postfix retries them",
            cut,
            stop_timeout,
        )
        # let the LMTP sessions write those 4xx replies
        await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
    for task in tasks:
        task.cancel()
    # Every identity's stop begins, even with no time left (it closes the Dovecot connection
    # when cancelled); what is still running at the deadline is cancelled and waited for.
    stops = [asyncio.ensure_future(i.stop()) for i in identities]
    if not stops:
        return
    _, running = await asyncio.wait(stops, timeout=max(0.0, deadline - loop.time()))
    if running:
        log.warning(
            "deliveries to Dovecot still running %.0f s after the stop began (stop_timeout); "
            "the friends' bridges retry them",
            stop_timeout,
        )
        for stop in running:
            stop.cancel()
    await asyncio.gather(*stops, return_exceptions=True)


async def _report_status(identities: list[Identity]) -> None:
    """systemd's STATUS= line (shown by `systemctl status`): friends online, network."""
    last = ""
    while True:
        online = total = 0
        offline_network = []
        for identity in identities:
            friends = identity.node.friends()
            total += len(friends)
            online += sum(1 for f in friends if identity.node.friend_connection(f))
            if identity.node.self_connection() == 0:
                offline_network.append(identity.user.mailbox)
        line = f"{online} of {total} Tox friends online" + (
            f"; not on the Tox network: {', '.join(offline_network)}" if offline_network else ""
        )
        if line != last:
            notify(f"STATUS={line}")
            last = line
        await asyncio.sleep(STATUS_SECONDS)


def _new_contacts(routes: Routes, identities: list[Identity], book: ContactBook) -> None:
    routes.book = book
    for identity in identities:
        identity.friends.follow_contacts()


def _end_friendships(identities: list[Identity]) -> None:
    """The friendships `contacts remove` asked to end (checked with the contacts file)."""
    for identity in identities:
        identity.end_friendships()


async def _housekeeping(config: Config, store: DeliveryStore, partials: Partials) -> None:
    """Forget old delivery records and partial transfers nobody resumed: now, then hourly."""
    while True:
        forgotten = store.prune()
        removed = partials.prune(config.partial_hours * 3600)
        if forgotten or removed:
            log.info(
                "housekeeping: forgot %d delivery records, removed %d stale partial transfers",
                forgotten,
                removed,
            )
        await asyncio.sleep(HOUSEKEEPING_SECONDS)


async def _search_friends(identities: list[Identity]) -> None:
    """Offline friends re-added while their or our DHT key is new (tox/friend_search.py)."""
    while True:
        await asyncio.sleep(SEARCH_TICK_SECONDS)
        for identity in identities:
            identity.search_friends()


async def _drop_stalled(config: Config, identities: list[Identity]) -> None:
    """A friend that starts a transfer and then sends nothing must not hold its slot forever."""
    while True:
        await asyncio.sleep(min(5.0, config.transfer_stall_timeout))
        for identity in identities:
            identity.drop_stalled()


async def _rebootstrap(config: Config, identities: list[Identity]) -> None:
    """Bootstrap again while off the Tox network; say once per outage when it lasts."""
    warned: set[str] = set()
    while True:
        await asyncio.sleep(REBOOTSTRAP_SECONDS)
        now = time.time()
        for identity in identities:
            if identity.node.self_connection() != 0:
                warned.discard(identity.user.mailbox)
                continue
            identity.bootstrap()
            offline_for = now - (identity.offline_network_since or now)
            if offline_for >= NO_NETWORK_WARNING_SECONDS and identity.user.mailbox not in warned:
                warned.add(identity.user.mailbox)
                log.warning(
                    "%s: not on the Tox network for %.0f s: %s",
                    identity.user.mailbox,
                    offline_for,
                    config.tox.offline_advice(),
                )
