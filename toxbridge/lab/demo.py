"""`make demo`: two households on loopback that know each other as contacts exchange real mail
over Tox (to ordinary addresses, and the reply back), then stay up.

    python -m toxbridge.lab.demo start   # start, send, show, print how to connect a mail client
    python -m toxbridge.lab.demo stop    # stop everything the demo started

Everything listens on 127.0.0.1 and the Tox network is one local tox-bootstrapd: LAN discovery
and IPv6 are off, so nothing leaves this machine.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

from . import _fs
from .bootstrapd import BootstrapNode
from .household import Household
from .ports import free_port, wait_until

ROOT = Path(os.environ.get("TOXBRIDGE_DEMO_DIR", "/tmp/toxbridge-demo"))
STATE = ROOT / "demo.json"
USERS = {"alice": {"alice": "alice-pw"}, "bob": {"bob": "bob-pw"}}


PORT_TRIES = 3


def start() -> int:
    if STATE.exists():
        print(f"A demo is already set up in {ROOT}; run `make demo-stop` first.", file=sys.stderr)
        return 1
    for attempt in range(1, PORT_TRIES + 1):
        try:
            homes = _start()
        except Exception as e:
            stop(quiet=True)
            # The ports are picked where no outgoing connection takes them, but another program
            # may still listen on one: then start over on other ports instead of failing.
            if "Address already in use" in str(e) and attempt < PORT_TRIES:
                print(f"a port was taken by another program; starting again on others ({e})", file=sys.stderr)
                continue
            print(f"demo failed: {e}", file=sys.stderr)
            return 1
        _print_accounts(homes)
        return 0
    raise AssertionError("unreachable")


def _start() -> list[Household]:
    ROOT.mkdir(parents=True, exist_ok=True)
    ROOT.chmod(0o755)
    started = time.monotonic()
    node = BootstrapNode(ROOT / "bootstrapd", free_port(), free_port())
    node.start()
    _save(node, [])
    assert node.public_key is not None  # read by start()
    boot = [(node.host, node.port, node.public_key)]
    homes = [Household(ROOT, name, users, boot) for name, users in USERS.items()]
    _save(node, homes)
    for home in homes:
        home.start()
        _save(node, homes)
    alice, bob = homes
    print(f"alice's Tox ID: {alice.tox_ids['alice']}")
    print(f"bob's Tox ID:   {bob.tox_ids['bob']}")
    print(
        "each household adds the other as a contact (toxbridge contacts add); the bridges "
        "become Tox friends …"
    )
    alice.contacts("add", "Bob", bob.tox_ids["bob"], bob.address("bob"))
    bob.contacts("add", "Alice", alice.tox_ids["alice"], alice.address("alice"))
    alice.wait_log(f"alice: friend {bob.tox_ids['bob'][:8].lower()} is a bridge", 90)
    bob.wait_log(f"bob: friend {alice.tox_ids['alice'][:8].lower()} is a bridge", 90)
    print(f"friends and connected after {time.monotonic() - started:.1f} s")
    mid = _mail(
        alice,
        "alice",
        bob,
        "bob",
        "Hello over Tox",
        "Hi Bob, this mail went Postfix → toxbridge → Tox → toxbridge → Dovecot. Grüße!",
    )
    _mail(
        bob,
        "bob",
        alice,
        "alice",
        "Re: Hello over Tox",
        "Hi Alice, and back the same way.",
        f"In-Reply-To: {mid}\r\n",
    )
    return homes


def _mail(
    source: Household, sender: str, target: Household, rcpt: str, subject: str, text: str, headers: str = ""
) -> str:
    """One mail to an ordinary address that the contacts route over Tox; prints how it arrived."""
    mid = f"<{uuid.uuid4()}@{source.domain}>"
    message = (
        f"From: {sender.title()} <{source.address(sender)}>\r\nTo: {target.address(rcpt)}\r\n"
        f"Subject: {subject}\r\nMessage-ID: {mid}\r\n{headers}MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{text}\r\n"
    ).encode()
    sent = time.monotonic()
    source.postfix.send(source.address(sender), [target.address(rcpt)], message)
    arrived = _wait_for(target, rcpt, mid)
    print(
        f"\n{source.address(sender)} -> {target.address(rcpt)}: in {rcpt}'s IMAP INBOX "
        f"{time.monotonic() - sent:.2f} s after SMTP:\n"
    )
    parsed = email.message_from_bytes(arrived, policy=email.policy.default)
    for name in ("Authentication-Results", "Received", "From", "To", "Subject"):
        for value in parsed.get_all(name, []):
            print(f"  {name}: {' '.join(str(value).split())}")
    print(f"\n  {parsed.get_content().strip()}\n")
    return mid


def _wait_for(home: Household, user: str, mid: str) -> bytes:
    found: list[bytes] = []

    def arrived() -> bool:
        found[:] = [m for m in home.dovecot.fetch_inbox(user) if mid.encode() in m]
        return bool(found)

    if not wait_until(arrived, 60, interval=0.1):
        raise TimeoutError(f"the mail did not reach {user}'s INBOX; see {home.bridge_log}")
    return found[0]


def _print_accounts(homes: list[Household]) -> None:
    print("Point Thunderbird (or any IMAP/SMTP client) at a household — no TLS, loopback only:\n")
    rows: list[tuple[str, ...]] = [("user", "address", "password", "IMAP", "POP3", "SMTP")]
    for home in homes:
        for user, password in home.users.items():
            rows.append(
                (
                    user,
                    home.address(user),
                    password,
                    *(
                        f"127.0.0.1:{port}"
                        for port in (home.dovecot.imap_port, home.dovecot.pop3_port, home.postfix.smtp_port)
                    ),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
    venv_cli = Path(sys.executable).with_name("toxbridge")
    for home in homes:
        print(f"\n  household {home.name}")
        for user in home.bridge_users:
            print(f"    Tox address of {user}: {home.tox_address(user)}")
        print(f"    contacts file: {home.contacts_path}")
        print(f"    its CLI: {venv_cli} --config {home.config_path} status")
    print(
        "\nThe demo's bridges accept every friend request; a real household's default is "
        "`friend_requests: pending`\n(a stranger waits for `toxbridge contacts accept`)."
    )
    print(f"Logs: {ROOT}/*/toxbridge.log, Postfix maillog and dovecot.log under {ROOT}.")
    print("Stop everything with: make demo-stop")


def _save(node: BootstrapNode, homes: list[Household]) -> None:
    """What `stop` needs, written before each start so a half-started demo can be stopped."""
    state = {
        "bootstrapd_pid": node.pid,
        "homes": [
            {
                "name": h.name,
                "bridge_pid": h.bridge_pid,
                "routes_pid": h.routes_pid,
                "postfix_config": str(h.postfix.config_dir),
                "dovecot_config": str(h.dovecot.config_file),
            }
            for h in homes
        ],
    }
    STATE.write_text(json.dumps(state, indent=1))


def stop(quiet: bool = False) -> int:
    if not STATE.exists():
        if not quiet:
            print(f"No demo state in {ROOT}; nothing to stop.")
        shutil.rmtree(ROOT, ignore_errors=True)
        return 0
    state = json.loads(STATE.read_text())
    for home in state["homes"]:
        _kill(home.get("bridge_pid"))
        _kill(home.get("routes_pid"))
        _fs.run(["postfix", "-c", home["postfix_config"], "stop"])
        _fs.run(["doveadm", "-c", home["dovecot_config"], "stop"])
    _kill(state.get("bootstrapd_pid"))
    shutil.rmtree(ROOT, ignore_errors=True)
    if not quiet:
        print("demo stopped")
    return 0


def _kill(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_until(lambda: not _fs.process_alive(pid), 15):
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    commands = {"start": start, "stop": stop}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print("usage: python -m toxbridge.lab.demo start|stop", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())
