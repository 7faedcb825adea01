"""`toxbridge contacts …`: edit the contacts book, see learned pairings and pending requests."""

from __future__ import annotations

import sys
import time

from ..address import AddressError
from ..config import Config
from . import editor
from .book import Contact, check_address, parse_tox_id
from .book import load as load_contacts
from .peer_text import printable
from .roster import FROM_BEFORE, WE_ASKED, Accepted, Roster

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _roster(cfg: Config, create: bool) -> Roster | None:
    path = cfg.state_dir / "roster.sqlite"
    if not create and not path.exists():
        return None
    return Roster(path)


def _fail(message: str, code: int = EXIT_FAIL) -> int:
    print(f"toxbridge: {message}", file=sys.stderr)
    return code


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))


def list_contacts(cfg: Config, args) -> int:
    book = load_contacts(cfg.contacts, cfg.mailboxes)
    print("NAME\tADDRESSES\tTOX ID\tUSERS\tSOURCE")
    for c in book.contacts:
        print(
            f"{c.name}\t{','.join(c.addresses) or '-'}\t{(c.tox_id or c.public_key).hex().upper()}\t"
            f"{','.join(c.users) or 'all'}\t{cfg.contacts}:{c.line}"
        )
    roster = _roster(cfg, create=False)
    if roster is not None:
        for entry in roster.learned():
            print(
                f"-\t{entry.address}\t{entry.public_key.hex().upper()}\t{entry.mailbox}\t"
                f"learned* {_day(entry.at)} UTC"
            )
        if roster.learned():
            print(
                "* learned: claimed by that Tox key's first mail (trust on first use), not written by "
                "anyone here; refuse one with `toxbridge contacts remove ADDRESS`",
                file=sys.stderr,
            )
        for stranger in roster.accepted():
            how = {WE_ASKED: "friend we asked", FROM_BEFORE: "friend from before"}.get(
                stranger.message, "accepted stranger"
            )
            print(
                f"-\t-\t{stranger.public_key.hex().upper()}\t{stranger.mailbox}\t{how} {_day(stranger.at)} UTC"
            )
        roster.close()
    return EXIT_OK


def add(cfg: Config, args) -> int:
    try:
        public_key, tox_id = parse_tox_id(args.tox_id)
        addresses = tuple(dict.fromkeys(check_address(a) for a in args.addresses))
    except (AddressError, ValueError) as e:
        return _fail(str(e), EXIT_USAGE)
    return _add(cfg, Contact(args.name.strip(), addresses, public_key, tox_id, tuple(args.user)))


def _add(cfg: Config, contact: Contact) -> int:
    mailboxes = cfg.mailboxes
    unknown = [u for u in contact.users if u not in mailboxes]
    own = [a for a in contact.addresses if cfg.user_by_address(a)]
    if own:
        return _fail(f"{own[0]} is the address of a user of this bridge, not of a Tox contact", EXIT_USAGE)
    if not contact.name or unknown:
        return _fail(
            f"no user {unknown[0]!r} in {cfg.source}" if unknown else "a contact needs a name", EXIT_USAGE
        )
    editor.edit(cfg.contacts, mailboxes, lambda text, source: editor.added(text, source, mailboxes, contact))
    roster = _roster(cfg, create=False)
    if roster is not None:  # a removal the bridge has not carried out yet is off
        roster.keep_friendship(contact.public_key)
        roster.close()
    print(
        f"added {contact.name} ({(contact.tox_id or contact.public_key).hex().upper()[:16]}…) "
        f"for {', '.join(contact.addresses) or 'no ordinary address'}; the running bridge follows within seconds"
    )
    return EXIT_OK


def remove(cfg: Config, args) -> int:
    """A contact (by name, address or key prefix), an accepted stranger (by key prefix) or a
    learned address. The Tox friendship of a contact or a stranger ends too (the running bridge
    deletes the friend), with every address learned for its key."""
    mailboxes = cfg.mailboxes
    book = load_contacts(cfg.contacts, mailboxes)
    found = book.find(args.what)
    if len(found) > 1:
        return _fail(
            f"{args.what!r} matches {len(found)} contacts ({', '.join(c.name for c in found)}); "
            "give an address or a longer Tox ID prefix"
        )
    strangers = [] if found else _accepted(cfg, args.what)
    if len({s.public_key for s in strangers}) > 1:
        return _fail(f"{args.what!r} matches {len(strangers)} accepted strangers; give more of the key")
    if found:
        gone = found[0]
        editor.edit(
            cfg.contacts, mailboxes, lambda text, source: editor.removed(text, source, mailboxes, gone)
        )
        print(f"removed {gone.name} (line {gone.line} of {cfg.contacts})")
        left = load_contacts(cfg.contacts, mailboxes).with_key(gone.public_key)
        ending = [m for m in gone.users or mailboxes if not any(c.serves(m) for c in left)]
        _end_friendships(cfg, gone.public_key, ending)
    elif strangers:
        _end_friendships(cfg, strangers[0].public_key, [s.mailbox for s in strangers])
    forgotten = 0
    roster = _roster(cfg, create=False)
    if roster is not None:
        forgotten = roster.forget(args.what)
        roster.close()
    if forgotten:
        print(f"forgot the learned pairing of {args.what} ({forgotten} mailbox(es))")
    if not found and not strangers and not forgotten:
        return _fail(f"no contact, accepted stranger or learned address matches {args.what!r}")
    return EXIT_OK


def _accepted(cfg: Config, what: str) -> list[Accepted]:
    """The strangers whose friend request the bridge accepted, whose key starts with `what`."""
    wanted = what.strip().lower()[:64]  # a full Tox ID starts with the key
    roster = _roster(cfg, create=False)
    if roster is None or len(wanted) < 8:
        return []
    try:
        return [a for a in roster.accepted() if a.public_key.hex().startswith(wanted)]
    finally:
        roster.close()


def _end_friendships(cfg: Config, public_key: bytes, mailboxes: list[str]) -> None:
    """Ask the bridge to delete the Tox friend of these mailboxes (now, or when it starts)."""
    if not mailboxes or not cfg.state_dir.is_dir():  # no state: no bridge ever made the friend
        return
    roster = _roster(cfg, create=True)
    assert roster is not None
    try:
        for mailbox in mailboxes:
            roster.end_friendship(mailbox, public_key)
    finally:
        roster.close()
    print(
        f"ending the Tox friendship of {public_key.hex().upper()[:16]}… with {', '.join(mailboxes)}; "
        "the running bridge deletes the friend within seconds"
    )


def _pending(cfg: Config) -> list:
    roster = _roster(cfg, create=False)
    if roster is None:
        return []
    try:
        return roster.pending()
    finally:
        roster.close()


def pending(cfg: Config, args) -> int:
    requests = _pending(cfg)
    print("USER\tPUBLIC KEY\tFIRST SEEN (UTC)\tMESSAGE")
    for p in requests:
        print(f"{p.mailbox}\t{p.public_key.hex().upper()}\t{_day(p.first_seen)}\t{printable(p.message)}")
    return EXIT_OK


def accept(cfg: Config, args) -> int:
    wanted = args.key.strip().lower()[:64]  # a full Tox ID starts with the key
    requests = [p for p in _pending(cfg) if p.public_key.hex().startswith(wanted)]
    keys = {p.public_key for p in requests}
    if len(wanted) < 8:
        return _fail(
            f"{args.key!r}: give at least 8 hex digits of the key (see `toxbridge contacts pending`)",
            EXIT_USAGE,
        )
    if len(keys) > 1:
        return _fail(f"{args.key!r} matches {len(keys)} pending keys; give more of it", EXIT_USAGE)
    try:
        public_key, tox_id = parse_tox_id(args.key)  # a full ID given: keep it
    except AddressError:
        if not keys:
            return _fail(f"no pending friend request matches {args.key!r} (see `toxbridge contacts pending`)")
        public_key, tox_id = keys.pop(), None
    try:
        addresses = tuple(dict.fromkeys(check_address(a) for a in args.address))
    except ValueError as e:
        return _fail(str(e), EXIT_USAGE)
    users = tuple(args.user) or tuple(dict.fromkeys(p.mailbox for p in requests))
    if set(users) == set(cfg.mailboxes):
        users = ()
    name = args.name or f"Tox friend {public_key.hex()[:8].upper()}"
    return _add(cfg, Contact(name, addresses, public_key, tox_id, users))


COMMANDS = {"list": list_contacts, "add": add, "remove": remove, "pending": pending, "accept": accept}
