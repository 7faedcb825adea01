"""`toxbridge routes`: what Postfix asks about routes, in a process of its own, without Tox.

Postfix asks the socketmap where each recipient goes (transport_maps) and shows the milter each
submitted mail (ordinary_mail: the notice, or the refusal). Neither needs toxcore: routes come
from the contacts file (followed as `toxbridge run` follows it) and the roster SQLite, which
`run` writes the learned pairings into and this process reads at every lookup (WAL, autocommit:
each lookup sees the last committed pairing). So with `run` stopped or crashed, ordinary mail
still leaves and still gets its notice (design decision 12), while contacts' and @tox mail wait
in Postfix's queue: the socketmap still routes them to `run`'s LMTP socket, which is gone, and
Postfix defers them until `run` is back.

With this process stopped, Postfix cannot ask the socketmap and answers 451 4.3.0 for every
address that is neither the household's nor @tox: it fails closed, so a contact's mail never
slips out by the ordinary route.

Whether a user's identity reaches a key (for a pairing another user learned) is read from the
records here, not from toxcore: a contact with that key serves the user, or the user learned a
pairing from that key (contacts/routes.py, Routes._reaches_by_records).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from .config import Config
from .contacts import follow
from .contacts.book import ContactsError
from .contacts.book import load as load_contacts
from .contacts.roster import Roster
from .contacts.routes import Routes
from .mail import milter, socketmap
from .mail.listen import StartupError, start_listener
from .ops.systemd import notify
from .ordinary import OrdinaryMail

log = logging.getLogger("toxbridge.routes")

# How long a stop waits for the milter sessions open then to end: below TimeoutStopSec (10 s) of
# deploy/systemd/toxbridge-routes.service, with room for the rest of the stop.
MILTER_DRAIN_SECONDS = 5.0

# The master.cf service that carries mail to `toxbridge run` (deploy/postfix/master.cf.toxbridge).
POSTFIX_SERVICE = "toxbridge"


def nexthop(config: Config) -> str:
    """Where Postfix hands mail that goes over Tox: `run`'s LMTP listener, through master.cf's
    service. Answered whether `run` is up or not: when it is not, Postfix defers that mail."""
    listen = config.lmtp_listen
    if listen.path:
        return f"{POSTFIX_SERVICE}:unix:{listen.path}"
    return f"{POSTFIX_SERVICE}:inet:{listen.host}:{listen.port}"


async def run(config: Config) -> None:
    try:
        book = load_contacts(config.contacts, config.mailboxes)
    except ContactsError as e:
        # Not an empty book instead: Postfix would route contacts' mail the normal way, off Tox.
        raise StartupError(
            f"{e} (fix the contacts file; toxbridge routes does not start without its contacts)"
        ) from None
    try:
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StartupError(f"cannot create {config.state_dir}: {e.strerror}") from None
    roster = Roster(config.state_dir / "roster.sqlite")
    try:
        await _serve(config, Routes.of(config, book, roster))
    finally:
        roster.close()


async def _serve(config: Config, routes: Routes) -> None:
    loop = asyncio.get_running_loop()
    to_bridge = nexthop(config)
    transport = {"transport": lambda key: to_bridge if routes.postfix_asks(key) else None}
    tables = await start_listener(
        "socketmap_listen",
        config.socketmap_listen,
        lambda: socketmap.start_server(config.socketmap_listen, transport),
    )
    # Postfix's submission service asks here about each mail's recipients (ordinary_mail).
    filters = await start_listener(
        "milter_listen",
        config.milter_listen,
        lambda: milter.start_server(config.milter_listen, OrdinaryMail(config, routes)),
    )
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            os._exit(1)
        log.info("%s: stopping", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    def new_book(book) -> None:
        routes.book = book

    follower = loop.create_task(follow.follow(config, log, new_book, lambda: None))
    log.info(
        "ready: socketmap on %s, milter on %s, %d contacts; mail over Tox goes to %s",
        config.socketmap_listen,
        config.milter_listen,
        len(routes.book.contacts),
        to_bridge,
    )
    notify("READY=1")
    notify(f"STATUS=socketmap on {config.socketmap_listen}, milter on {config.milter_listen}")
    try:
        await stop.wait()
    finally:
        notify("STOPPING=1")
        # No new questions. A cut socketmap lookup is a 4xx Postfix retries; a milter session cut
        # in a mail makes Postfix accept that mail unchecked (milter_default_action), so the open
        # ones may finish first.
        tables.close()
        cut = await filters.drain(MILTER_DRAIN_SECONDS)
        if cut:
            log.warning(
                "cut %d milter session(s) still open after %.0f s; Postfix lets their mail through",
                cut,
                MILTER_DRAIN_SECONDS,
            )
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        log.info("stopped")
