"""`toxbridge status`: one line per check, ok/warn/error, and what to do about each problem.

The checks that need the daemon (Tox network, friends) ask it over the control socket; the rest
look for themselves (listeners, Dovecot, Postfix's queue, disk, profiles), so status still says
useful things when the daemon is down. Two processes: `toxbridge run` (Tox, LMTP; up when its
control socket answers) and `toxbridge routes` (socketmap, milter; up when they answer). Judging is kept apart from probing: the `*_check`
functions take what was observed and return Checks.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import Config, Endpoint
from ..contacts.book import ContactBook, ContactsError
from ..contacts.book import load as load_contacts
from ..contacts.roster import Learned, Roster
from ..contacts.routes import Routes
from ..mail import milter, postqueue, socketmap
from ..tox.profile import profile_path
from . import control

OK, WARN, ERROR = "ok", "warn", "error"
EXIT = {OK: 0, WARN: 1, ERROR: 2}
PROBE_TIMEOUT = 5.0
ROUTES_SERVICE = "toxbridge-routes"  # deploy/systemd/toxbridge-routes.service


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    text: str
    action: str = ""


def worst(checks: list[Check]) -> str:
    return max((c.level for c in checks), key=EXIT.__getitem__, default=OK)


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _when(at: float, now: float) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(at))} ({_ago(now - at)} ago)"


# ---- judging what was observed (no I/O)


def daemon_check(snapshot: dict | None, config: Config, now: float) -> Check:
    if snapshot is None:
        return Check(
            "daemon",
            ERROR,
            f"toxbridge is not running (nothing answers on {control.socket_path(config.state_dir)}): "
            "mail to contacts and @tox waits in Postfix's queue, ordinary mail still leaves",
            "start it (systemctl start toxbridge); `journalctl -u toxbridge -n 50` says why it stopped",
        )
    return Check(
        "daemon",
        OK,
        f"toxbridge runs (pid {snapshot['pid']}, up {_ago(now - snapshot['started'])}, "
        f"{snapshot['contacts']} contacts, {snapshot['in_flight']} mails on their way)",
    )


def identity_checks(identity: dict, config: Config, now: float) -> list[Check]:
    who = identity["mailbox"]
    if identity["network"]:
        checks = [
            Check(
                f"tox {who}",
                OK,
                f"{identity['address']} is on the Tox network via {identity['network']}"
                f" (Tox ID {identity['tox_id'][:16]}…)",
            )
        ]
    else:
        checks = [
            Check(
                f"tox {who}",
                ERROR,
                f"{identity['address']} is not connected to the Tox network",
                config.tox.offline_advice(),
            )
        ]
    for friend in identity["friends"]:
        name = f"{friend['name'] or 'friend'} ({friend['key'][:8]})"
        since = friend["since"]
        chat_app = friend.get("chat_app", False)
        cut_day, cut = friend.get("chat_cut_today") or ("", 0)
        if cut and cut_day == time.strftime("%Y-%m-%d", time.gmtime(now)):
            checks.append(
                Check(
                    f"friend {who}",
                    WARN,
                    f"{name} (a Tox chat app) reached today's chat limit: {cut} message(s) dropped",
                    "a person rarely chats this much; if they do, raise chat.day_max_messages / "
                    "day_max_bytes in toxbridge.yaml, else end the friendship "
                    f"(`toxbridge contacts remove {friend['key'][:8]}`)",
                )
            )
        if friend["online"]:
            if friend["bridge"]:
                kind = ""
            elif chat_app:
                kind = ", a Tox chat app (no bridge): its messages arrive as mail, mail to it goes as chat"
            else:
                kind = ", not a toxbridge (a Tox chat client?)"
            checks.append(
                Check(
                    f"friend {who}",
                    OK,
                    f"{name} online via {friend['via']}"
                    + (f" since {_when(since, now)}" if since else "")
                    + kind,
                )
            )
        elif since and chat_app:
            checks.append(
                Check(
                    f"friend {who}",
                    WARN,
                    f"{name} (a Tox chat app) offline since {_when(since, now)}",
                    "their chat app is closed or offline; mail for them waits in Postfix's queue and "
                    "goes out as chat messages when they open it",
                )
            )
        elif since:
            checks.append(
                Check(
                    f"friend {who}",
                    WARN,
                    f"{name} offline since {_when(since, now)}",
                    "their bridge is off or cannot reach the Tox network; mail for them waits in "
                    "Postfix's queue and goes out when they come online",
                )
            )
        else:
            checks.append(
                Check(
                    f"friend {who}",
                    WARN,
                    f"{name} has never been online",
                    "they have not accepted the friend request yet, or their bridge never ran; "
                    "check the Tox ID you have for them",
                )
            )
    return checks


def routes_check(config: Config, socketmap_error: str | None, milter_error: str | None) -> Check:
    """Does `toxbridge routes` run? One of its two listeners answering says it does."""
    if socketmap_error is None or milter_error is None:
        return Check("routes", OK, "toxbridge routes answers Postfix (socketmap, milter)")
    if config.socketmap_listen.path and socketmap_error == os.strerror(errno.EACCES):
        return Check("routes", WARN, "cannot tell whether toxbridge routes runs", "run status as root")
    return Check(
        "routes",
        ERROR,
        f"toxbridge routes is not running (nothing answers on {config.socketmap_listen} nor "
        f"{config.milter_listen}): Postfix answers 451 4.3.0 for every address that is neither "
        "the household's nor @tox, ordinary mail included",
        f"start it (systemctl start {ROUTES_SERVICE}); `journalctl -u {ROUTES_SERVICE} -n 50` says why "
        "it stopped",
    )


def listener_check(
    name: str, key: str, endpoint: Endpoint, error: str | None, daemon_up: bool, service: str = "toxbridge"
) -> Check:
    """daemon_up: the process that should listen there (`service`) runs."""
    if error is None:
        return Check(name, OK, f"answers on {endpoint}")
    if endpoint.path and error == os.strerror(errno.EACCES):
        # The socket is for Postfix only (mail/listen.py): not a fault of the bridge.
        return Check(
            name, WARN, f"{endpoint}: {error}", "only Postfix and root may open it: run status as root"
        )
    if not daemon_up:
        return Check(name, ERROR, f"nothing answers on {endpoint} ({error})", f"start {service}")
    return Check(
        name,
        ERROR,
        f"{endpoint} does not answer as it should ({error})",
        f"another program may hold it: `ss -lxp | grep {endpoint.path}`; or change {key}"
        if endpoint.path
        else f"another program may hold the port: `ss -ltnp | grep {endpoint.port}`; or change {key}",
    )


def ordinary_mail_check(config: Config) -> Check:
    """What mail to people who are not Tox contacts gets (ordinary_mail), and whose choice differs."""
    own = [f"{u.ordinary_mail} for {u.mailbox}" for u in config.users if u.ordinary_mail]
    meaning = {
        "notify": "it leaves by ordinary e-mail and the sender gets a notice",
        "allow": "it leaves by ordinary e-mail, no notice",
        "refuse": "refused (550 5.7.1)",
    }[config.ordinary_mail]
    text = f"mail to non-contacts: {config.ordinary_mail} ({meaning})" + (
        f"; {', '.join(own)}" if own else ""
    )
    return Check("ordinary", OK, text)


def dovecot_check(endpoint: Endpoint, error: str | None, source: str) -> Check:
    if error is None:
        return Check("dovecot", OK, f"Dovecot's LMTP answers on {endpoint}")
    return Check(
        "dovecot",
        ERROR,
        f"Dovecot's LMTP on {endpoint} does not answer ({error}); mail arriving over "
        "Tox is refused with 4xx and the friend's bridge retries",
        f"start Dovecot (systemctl start dovecot), or fix dovecot_lmtp in {source}",
    )


def queue_check(entries: list[dict] | None, goes_over_tox, error: str, now: float) -> Check:
    if entries is None:
        return Check(
            "queue",
            WARN,
            f"cannot read Postfix's queue: {error}",
            "check postfix.config_dir and postfix.postqueue in the config, and that Postfix runs",
        )
    waiting = [
        e
        for e in entries
        if e.get("queue_name") == "deferred"
        and any(goes_over_tox(str(r.get("address", ""))) for r in e.get("recipients", []))
    ]
    if not waiting:
        return Check("queue", OK, "no mail for Tox recipients waits in Postfix's queue")
    oldest = min(waiting, key=lambda e: e.get("arrival_time", now))
    reasons = [r.get("delay_reason", "") for r in oldest.get("recipients", []) if r.get("delay_reason")]
    why = f": {reasons[0]}" if reasons else ""
    if "uses a Tox chat app" in why:  # the bridge's own words for a chat-app friend (identity.py)
        advice = "it goes out as chat messages when the friend opens their chat app (the bridge pushes it)"
    else:
        advice = "they go out when the friend is online (the bridge pushes them)"
    return Check(
        "queue",
        WARN,
        f"{len(waiting)} mail(s) for Tox recipients wait in Postfix's queue, the oldest "
        f"for {_ago(now - oldest.get('arrival_time', now))}{why}",
        f"{advice}; `postqueue -p` lists them",
    )


def disk_check(state_dir: Path, free: int | None, max_message: int) -> Check:
    if free is None:
        return Check("disk", ERROR, f"{state_dir} does not exist", "run `toxbridge init`")
    text = f"{free // 2**20} MiB free for {state_dir}"
    if free < 2 * max_message:
        return Check(
            "disk",
            ERROR,
            text + f"; a {max_message // 2**20} MiB mail may not fit",
            "free disk space: incoming mail is written there before it reaches Dovecot",
        )
    if free < 10 * max_message:
        return Check("disk", WARN, text + " (little)", "free disk space soon")
    return Check("disk", OK, text)


def profile_check(mailbox: str, path: Path, mode: int | None, owner_ok: bool) -> Check:
    if mode is None:
        return Check(f"profile {mailbox}", ERROR, f"no Tox profile at {path}", "run `toxbridge init`")
    if mode & 0o077:
        return Check(
            f"profile {mailbox}",
            ERROR,
            f"{path} is readable by others (mode {mode & 0o777:o}): its secret key is the user's identity",
            f"chmod 600 {path}",
        )
    if not owner_ok:
        return Check(
            f"profile {mailbox}",
            WARN,
            f"{path} belongs to another user than the state directory",
            f"chown it to the user toxbridge runs as (owner of {path.parent.parent})",
        )
    return Check(f"profile {mailbox}", OK, f"{path} readable by the service only")


# ---- probing


def probe_lmtp(endpoint: Endpoint) -> str | None:
    """None when an LMTP server greets and answers LHLO; else what went wrong."""
    try:
        with _connect(endpoint) as sock:
            reader = sock.makefile("rb")
            if not reader.readline().startswith(b"220"):
                return "no 220 greeting"
            sock.sendall(b"LHLO toxbridge-status\r\n")
            while (line := reader.readline()) and line[3:4] == b"-":
                pass
            sock.sendall(b"QUIT\r\n")
            return None if line.startswith(b"250") else f"LHLO answered {line[:60]!r}"
    except OSError as e:
        return e.strerror or type(e).__name__


def probe_socketmap(endpoint: Endpoint) -> str | None:
    """None when a socketmap answers `transport *` with NOTFOUND (the bridge never routes `*`)."""
    try:
        with _connect(endpoint) as sock:
            sock.sendall(socketmap.encode(b"transport *"))
            decoder = socketmap.Decoder()
            replies: list[bytes] = []
            while not replies:
                data = sock.recv(4096)
                if not data:
                    return "closed the connection without an answer"
                replies = decoder.feed(data)
            return None if replies[0].startswith(b"NOTFOUND") else f"answered {replies[0][:60]!r}"
    except (OSError, socketmap.SocketmapError) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__


def probe_milter(endpoint: Endpoint) -> str | None:
    """None when a milter answers Postfix's opening negotiation with its own."""
    try:
        with _connect(endpoint) as sock:
            sock.sendall(milter.postfix_negotiation())
            data = b""
            while len(data) < 5 or len(data) < 4 + int.from_bytes(data[:4], "big"):
                chunk = sock.recv(4096)
                if not chunk:
                    return "closed the connection without an answer"
                data += chunk
            return None if data[4:5] == b"O" else f"answered {data[:20]!r}"
    except OSError as e:
        return e.strerror or type(e).__name__


def _connect(endpoint: Endpoint) -> socket.socket:
    if endpoint.path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(PROBE_TIMEOUT)
        sock.connect(endpoint.path)
        return sock
    return socket.create_connection((endpoint.host, endpoint.port), timeout=PROBE_TIMEOUT)


def _transport_test(config: Config):
    """Which recipients the bridge routes: contacts, learned pairings, @tox (read-only)."""
    mailboxes = config.mailboxes
    try:
        book = load_contacts(config.contacts, mailboxes)
    except ContactsError:
        book = ContactBook()
    roster_path = config.state_dir / "roster.sqlite"
    roster = Roster(roster_path) if roster_path.exists() else Roster(":memory:")
    return Routes.of(config, book, roster).transport


def run(config: Config) -> list[Check]:
    now = time.time()
    snapshot = control.query(control.socket_path(config.state_dir), "status")
    checks = [daemon_check(snapshot, config, now)]
    for identity in (snapshot or {}).get("identities", []):
        checks += identity_checks(identity, config, now)
    up = snapshot is not None
    checks.append(
        listener_check("lmtp", "lmtp_listen", config.lmtp_listen, probe_lmtp(config.lmtp_listen), up)
    )
    tables, filters = probe_socketmap(config.socketmap_listen), probe_milter(config.milter_listen)
    routes = routes_check(config, tables, filters)
    checks.append(routes)
    routes_up = routes.level == OK
    checks.append(
        listener_check(
            "socketmap", "socketmap_listen", config.socketmap_listen, tables, routes_up, ROUTES_SERVICE
        )
    )
    checks.append(
        listener_check("milter", "milter_listen", config.milter_listen, filters, routes_up, ROUTES_SERVICE)
    )
    checks.append(ordinary_mail_check(config))
    checks.append(dovecot_check(config.dovecot_lmtp, probe_lmtp(config.dovecot_lmtp), config.source))
    try:
        entries, error = postqueue.list_queue(config.postfix), ""
    except (OSError, subprocess.SubprocessError) as e:
        entries, error = None, str(e)
    checks.append(queue_check(entries, _transport_test(config), error, now))
    roster_path = config.state_dir / "roster.sqlite"
    if roster_path.exists():
        roster = Roster(roster_path)
        try:
            checks.append(claims_check(roster.learned(), now))
        finally:
            roster.close()
    try:
        free = shutil.disk_usage(config.state_dir).free
    except OSError:
        free = None
    checks.append(disk_check(config.state_dir, free, config.max_message_size))
    owner = _owner(config.state_dir)
    for user in config.users:
        path = profile_path(config.state_dir, user.mailbox)
        try:
            st = path.stat()
            checks.append(profile_check(user.mailbox, path, stat.S_IMODE(st.st_mode), st.st_uid == owner))
        except OSError:
            checks.append(profile_check(user.mailbox, path, None, False))
    return checks


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def as_text(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.level:5}  {c.name:{width}}  {c.text}")
        if c.action and c.level != OK:
            lines.append(f"{'':5}  {'':{width}}  -> {c.action}")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> dict:
    return {"status": worst(checks), "checks": [asdict(c) for c in checks]}


CLAIM_DAYS = 7  # a pairing this young is still news to the household


def claims_check(learned: list[Learned], now: float) -> Check:
    """Pairings friends claimed by trust on first use in the last CLAIM_DAYS: each hands that
    friend the household's mail to the address, so the household should see them (issue 15.4)."""
    fresh = [e for e in learned if now - e.at < CLAIM_DAYS * 86400]
    if not fresh:
        return Check("claims", OK, f"no address newly claimed by a Tox friend in {CLAIM_DAYS} days")
    shown = ", ".join(f"{e.address} -> {e.public_key.hex()[:8]} ({e.mailbox})" for e in fresh[:5])
    more = f" and {len(fresh) - 5} more" if len(fresh) > 5 else ""
    return Check(
        "claims",
        WARN,
        f"{len(fresh)} address(es) first claimed by a Tox friend in {CLAIM_DAYS} days, their mail now "
        f"goes over Tox: {shown}{more}",
        "check them with `toxbridge contacts list`; refuse one: `toxbridge contacts remove ADDRESS`",
    )
