"""The `toxbridge` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__, daemon, routes_daemon
from . import config as config_mod
from .config import Config, ConfigError, User
from .contacts import commands as contacts_commands
from .contacts.book import load as load_contacts
from .files import StateError, state_subdir
from .mail.listen import StartupError
from .ops import qr, status
from .ops.invite import invitation
from .tox.errors import ToxError
from .tox.profile import ensure_profile, read_address

DEFAULT_CONFIG = "/etc/toxbridge/toxbridge.yaml"

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toxbridge", description="E-mail between households over Tox.")
    parser.add_argument(
        "--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--version", action="version", version=f"toxbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    checker = sub.add_parser(
        "check-config", help="validate the config file and the contacts file; exit 0 when usable"
    )
    checker.add_argument(
        "--contacts",
        metavar="FILE",
        type=Path,
        help="check FILE as the contacts file instead of the configured one (before installing it)",
    )
    sub.add_parser("init", help="create the state directory and a Tox profile per user; print USER TOXID")
    show = sub.add_parser("id", help="print USER TOXID for every user, or one")
    show.add_argument(
        "user", nargs="?", help="mailbox name (with --qr or --png: needed when there are several users)"
    )
    show.add_argument(
        "--qr", action="store_true", help="also draw the Tox ID as a QR code for a Tox app to scan"
    )
    show.add_argument(
        "--png", metavar="FILE", type=Path, help="also write that QR code to FILE as a PNG image"
    )
    invite_parser = sub.add_parser(
        "invite", help="a text to send a friend: your address, your Tox ID, how to add you"
    )
    invite_parser.add_argument("user", nargs="?", help="mailbox name (needed when there are several users)")
    _contacts_parser(sub)
    status_parser = sub.add_parser(
        "status", help="check everything the bridge needs; exit 0 ok, 1 warnings, 2 errors"
    )
    status_parser.add_argument("--json", action="store_true", help="the checks as JSON")
    daemon = sub.add_parser("run", help="run the bridge: Tox, the LMTP listener for Postfix")
    daemon.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    routes = sub.add_parser(
        "routes", help="answer Postfix's route questions (socketmap, milter); runs beside `run`"
    )
    routes.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        command = (
            COMMANDS[args.command] if args.command != "contacts" else contacts_commands.COMMANDS[args.action]
        )
        return command(cfg, args)
    except ConfigError as e:
        print(f"toxbridge: {e}", file=sys.stderr)
        return EXIT_FAIL
    except (StateError, ToxError, StartupError) as e:
        print(f"toxbridge: {e}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as e:  # a file the command must write: permissions, full disk
        print(f"toxbridge: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return EXIT_FAIL


def _contacts_parser(sub) -> None:
    parser = sub.add_parser("contacts", help="the household's contacts: list, add, remove, pending, accept")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="written contacts and learned pairings")
    add = actions.add_parser("add", help="add a contact: mail to its addresses goes over Tox")
    add.add_argument("name")
    add.add_argument("tox_id", help="76 hex digits (full Tox ID) or 64 (public key)")
    add.add_argument(
        "addresses", nargs="*", metavar="address", help="the contact's ordinary e-mail addresses"
    )
    add.add_argument(
        "--user", action="append", default=[], help="local mailbox it serves (repeat; default all)"
    )
    remove = actions.add_parser(
        "remove", help="remove a contact (by name, address or Tox ID prefix) or a learned address"
    )
    remove.add_argument("what")
    actions.add_parser("pending", help="friend requests from strangers, waiting for `accept`")
    accept = actions.add_parser("accept", help="accept a pending friend request: the key becomes a contact")
    accept.add_argument(
        "key", help="the requester's public key (or a prefix of 8+ hex digits from `pending`)"
    )
    accept.add_argument("--name", help="name for the new contact (default: Tox friend KEYPREFIX)")
    accept.add_argument(
        "--address", action="append", default=[], help="their ordinary e-mail address (repeat)"
    )
    accept.add_argument(
        "--user", action="append", default=[], help="local mailbox it serves (default: those it asked)"
    )


def check_config(cfg: Config, args) -> int:
    # The contacts too: the daemon refuses to start with a broken book (ExecStartPre runs this).
    book = load_contacts(args.contacts or cfg.contacts, cfg.mailboxes)
    print(
        f"{cfg.source}: ok ({len(cfg.users)} users, LMTP on {cfg.lmtp_listen}, Dovecot at {cfg.dovecot_lmtp},"
        f" milter on {cfg.milter_listen}, ordinary_mail: {cfg.ordinary_mail}"
        + "".join(f", {u.mailbox}: {u.ordinary_mail}" for u in cfg.users if u.ordinary_mail)
        + ")"
    )
    print(f"{book.source}: ok ({len(book.contacts)} contacts)")
    return EXIT_OK


def init(cfg: Config, args) -> int:
    state_subdir(cfg.state_dir, "profiles")
    for user in cfg.users:
        address, created = ensure_profile(cfg, user)
        print(f"{user.mailbox} {address.hex().upper()}")
        if created:
            print(f"toxbridge: created Tox profile for {user.mailbox}", file=sys.stderr)
    return EXIT_OK


def show_id(cfg: Config, args) -> int:
    drawn = args.qr or args.png is not None
    if drawn:  # a QR code is one person's
        user = _one_user(cfg, args.user, "id --qr/--png")
        if isinstance(user, int):
            return user
        users = [user]
    else:
        users = [u for u in cfg.users if args.user in (None, u.mailbox)]
        if not users:
            print(f"toxbridge: no user {args.user!r} in {cfg.source}", file=sys.stderr)
            return EXIT_FAIL
    for user in users:
        address = _address(cfg, user)
        if address is None:
            return EXIT_FAIL
        if drawn:
            modules = qr.matrix(qr.tox_uri(address))
            if args.png is not None:
                qr.write_png(args.png, modules)  # an OSError becomes exit 1 in main
                print(f"toxbridge: wrote {user.mailbox}'s Tox ID as a QR code to {args.png}", file=sys.stderr)
            if args.qr:
                sys.stdout.write(
                    qr.to_text(modules, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
                )
        print(f"{user.mailbox} {address.hex().upper()}")
    return EXIT_OK


def invite(cfg: Config, args) -> int:
    user = _one_user(cfg, args.user, "invite")
    if isinstance(user, int):
        return user
    address = _address(cfg, user)
    if address is None:
        return EXIT_FAIL
    sys.stdout.write(invitation(user.address, address.hex().upper()))
    return EXIT_OK


def _one_user(cfg: Config, name: str | None, command: str) -> User | int:
    """The user a one-person command is about: the one named, else the only one. Otherwise an
    exit code, after saying why: 1 for a name not in the config, 2 for no name among several."""
    if name is None:
        if len(cfg.users) == 1:
            return cfg.users[0]
        names = ", ".join(u.mailbox for u in cfg.users)
        print(f"toxbridge: {command} is for one user: name one of {names}", file=sys.stderr)
        return EXIT_USAGE
    user = cfg.user_by_mailbox(name)
    if user is None:
        print(f"toxbridge: no user {name!r} in {cfg.source}", file=sys.stderr)
        return EXIT_FAIL
    return user


def _address(cfg: Config, user: User) -> bytes | None:
    """The user's Tox ID; None, after saying to run init, when they have no profile yet."""
    address = read_address(cfg, user)
    if address is None:
        print(f"toxbridge: {user.mailbox} has no Tox profile yet; run `toxbridge init`", file=sys.stderr)
    return address


def show_status(cfg: Config, args) -> int:
    checks = status.run(cfg)
    if args.json:
        print(json.dumps(status.as_json(checks), indent=1))
    else:
        print(status.as_text(checks))
    return status.EXIT[status.worst(checks)]


def _log_to_stderr(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # aiosmtpd logs every command at INFO; our own lines say what happened to each mail.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_daemon(cfg: Config, args) -> int:
    _log_to_stderr(args.log_level)
    asyncio.run(daemon.run(cfg))
    return EXIT_OK


def run_routes(cfg: Config, args) -> int:
    _log_to_stderr(args.log_level)
    asyncio.run(routes_daemon.run(cfg))
    return EXIT_OK


COMMANDS = {
    "check-config": check_config,
    "init": init,
    "id": show_id,
    "invite": invite,
    "run": run_daemon,
    "routes": run_routes,
    "status": show_status,
}

if __name__ == "__main__":
    sys.exit(main())
