"""One household on loopback: its own Postfix, Dovecot and the two toxbridge processes.

The bridge runs as real processes, as deploy/systemd runs them: `python -m toxbridge run` (Tox,
the LMTP listener; "the bridge") and `python -m toxbridge routes` (the socketmap and the milter
Postfix asks), with a config written from the same keys as deploy/toxbridge.yaml. Both write
into one log file, as both write into one journal, which the tests can wait on. With `netns` the
household lives in that network namespace (behind a router of lab/internet.py): its servers are
started there and `inside()` puts the caller's clients there too.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path

import yaml

from . import _fs
from . import netns as namespaces
from .dovecot import Dovecot
from .ports import free_port, port_accepts, socket_accepts, wait_until
from .postfix import Postfix

BRIDGE_START_TIMEOUT = 30.0
CONTACTS_RELOAD_TIMEOUT = 10.0
# The loggers of the two processes that reread the contacts file (contacts/follow.py).
CONTACTS_FOLLOWERS = ("toxbridge.daemon", "toxbridge.routes")


class Household:
    def __init__(
        self,
        root: Path,
        name: str,
        users: dict[str, str],
        bootstrap: list[tuple[str, int, bytes]],
        bridge_users: list[str] | None = None,
        friend_requests: str = "accept",
        postfix_extra: dict[str, str] | None = None,
        bridge_settings: dict | None = None,
        tox_only: bool = False,
        tox_settings: dict | None = None,
        tcp_listeners: bool = False,
        submission: bool = False,
        netns: str | None = None,
        postfix_services: list[str] | None = None,
    ) -> None:
        """users: mailbox → password (all get Dovecot mailboxes); bridge_users: those with a Tox
        identity (default: all); bootstrap: (host, port, public key) of local DHT nodes;
        bridge_settings: top-level toxbridge.yaml keys to set (e.g. result_timeout); tox_only: Postfix
        bounces mail to non-contacts (deploy/postfix/main.cf.tox-only); tox_settings: keys of the
        config's tox section to set or override (e.g. udp, tcp_relays, proxy); tcp_listeners: the
        bridge listens for Postfix on loopback ports (bridge_port, socketmap_port, milter_port)
        instead of the unix sockets in Postfix's queue directory that deploy/ uses; submission:
        Postfix also runs a submission service as the playbook sets it up (STARTTLS, the users'
        Dovecot logins, the bridge's milter), on `postfix.submission_port`; netns: the network
        namespace everything of the household runs in (None: the caller's); postfix_services: more
        master.cf lines for its Postfix."""
        self.root = _fs.prepare_root(Path(root) / name)
        self.name = name
        self.netns = netns
        self.domain = f"{name}.test"
        self.users = dict(users)
        self.bridge_users = list(bridge_users if bridge_users is not None else users)
        self.bridge_port = free_port() if tcp_listeners else None
        self.dovecot = Dovecot(self.root, name, self.users, free_port(), free_port(), free_port())
        self.socketmap_port = free_port() if tcp_listeners else None
        self.milter_port = free_port() if tcp_listeners else None
        self.postfix = Postfix(
            self.root,
            name,
            self.domain,
            free_port(),
            list(self.users),
            self.dovecot.lmtp_port,
            self.bridge_port,
            postfix_extra,
            socketmap_port=self.socketmap_port,
            tox_only=tox_only,
            milter_port=self.milter_port,
            submission_port=free_port() if submission else None,
            sasl_path=str(self.dovecot.auth_socket) if submission else None,
            services=postfix_services,
        )
        self.config_path = self.root / "toxbridge.yaml"
        self.contacts_path = self.root / "contacts.yaml"
        self.bridge_log = self.root / "toxbridge.log"
        self._bridge: subprocess.Popen | None = None
        self._routes: subprocess.Popen | None = None
        self.tox_ids: dict[str, str] = {}
        self.tox_settings = dict(tox_settings or {})
        self._write_config(bootstrap, friend_requests, bridge_settings or {})

    def inside(self):
        """A context in which this thread's sockets and subprocesses are in the household's
        network namespace (its 127.0.0.1 is the household's own)."""
        return namespaces.entered(self.netns)

    def send(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Submit a mail to the household's Postfix over SMTP, from inside the household."""
        with self.inside():
            self.postfix.send(sender, recipients, message)

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def tox_address(self, user: str) -> str:
        return f"{self.tox_ids[user]}@tox"

    def _write_config(self, bootstrap, friend_requests: str, settings: dict) -> None:
        config = {
            "state_dir": str(self.root / "state"),
            "lmtp_listen": self._listen(self.bridge_port, self.postfix.bridge_lmtp_socket),
            "socketmap_listen": self._listen(self.socketmap_port, self.postfix.socketmap_socket),
            "milter_listen": self._listen(self.milter_port, self.postfix.milter_socket),
            "dovecot_lmtp": f"127.0.0.1:{self.dovecot.lmtp_port}",
            "contacts": str(self.contacts_path),
            "hostname": f"bridge.{self.domain}",
            "users": [{"mailbox": u, "address": self.address(u)} for u in self.bridge_users],
            "postfix": {"config_dir": str(self.postfix.config_dir), "postqueue": "/usr/sbin/postqueue"},
            "tox": {
                "udp": True,
                "ipv6": False,
                "local_discovery": False,
                "port_range": [33445, 33545],
                "bootstrap": [{"host": h, "port": p, "public_key": k.hex()} for h, p, k in bootstrap],
                "friend_requests": friend_requests,
                **self.tox_settings,
            },
            **settings,
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @staticmethod
    def _listen(port: int | None, socket_path: Path) -> str:
        return str(socket_path) if port is None else f"127.0.0.1:{port}"

    @property
    def socketmap(self) -> str:
        """The bridge's socketmap as postmap -q names it."""
        if self.socketmap_port is None:
            return f"unix:{self.postfix.socketmap_socket}"
        return f"inet:127.0.0.1:{self.socketmap_port}"

    def _routes_listen(self) -> bool:
        """`routes` opens the milter last (after the socketmap): then both answer."""
        if self.milter_port is None:
            return socket_accepts(self.postfix.milter_socket)
        return port_accepts(self.milter_port)

    def _bridge_listens(self) -> bool:
        """`run` opens its control socket last (after LMTP): then both answer."""
        return socket_accepts(self.root / "state" / "control.sock")

    def toxbridge(self, *args: str) -> subprocess.CompletedProcess:
        return _fs.run([sys.executable, "-m", "toxbridge", "--config", str(self.config_path), *args])

    def contacts(self, *args: str) -> subprocess.CompletedProcess:
        """`toxbridge contacts ARGS` for this household; raises when it fails. After `add`, waits
        until the running bridge has reread the file (it polls every second): a lookup cannot
        tell, since an address learned before may route to the bridge already. Both processes
        reread it: each running one is waited for."""
        mark = self.log_mark()
        done = self.toxbridge("contacts", *args)
        if done.returncode != 0:
            raise RuntimeError(f"toxbridge contacts {' '.join(args)} failed: {done.stderr}")
        if args[:1] == ("add",):
            for process, logger in zip((self._bridge, self._routes), CONTACTS_FOLLOWERS, strict=True):
                if process is not None and process.poll() is None:
                    self.wait_log(
                        f"{logger} INFO contacts reloaded from", CONTACTS_RELOAD_TIMEOUT, since=mark
                    )
        return done

    def submit(self, user: str, recipients: list[str], message: bytes, sender: str | None = None) -> dict:
        """Send as a mail client does: submission, STARTTLS, login with the user's password; the
        envelope sender is the user's address unless `sender` says otherwise ("" for a bounce).
        Returns the refused recipients (SMTP code, text); raises when all are refused."""
        if self.postfix.submission_port is None:
            raise RuntimeError(f"household {self.name} has no submission service (submission=True)")
        context = ssl.create_default_context()
        context.check_hostname = False  # the lab's certificate is self-signed
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.postfix.submission_port, timeout=60) as smtp:
            smtp.starttls(context=context)
            smtp.login(user, self.users[user])
            return smtp.sendmail(self.address(user) if sender is None else sender, recipients, message)

    def start(self) -> None:
        with self.inside():
            self.dovecot.start()
            self.postfix.start()
            init = self.toxbridge("init")
        if init.returncode != 0:
            raise RuntimeError(f"toxbridge init failed: {init.stderr}")
        self.tox_ids = dict(line.split() for line in init.stdout.splitlines())
        self.start_routes()
        self.start_bridge()

    def _spawn(self, command: str, listens, env: dict[str, str] | None) -> subprocess.Popen:
        with self.inside():
            return self._spawn_here(command, listens, env)

    def _spawn_here(self, command: str, listens, env: dict[str, str] | None) -> subprocess.Popen:
        with open(self.bridge_log, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "toxbridge", "--config", str(self.config_path), command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        ok = wait_until(lambda: listens() or process.poll() is not None, BRIDGE_START_TIMEOUT)
        if not ok or process.poll() is not None:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise RuntimeError(
                f"toxbridge {command} for {self.name} did not start:\n{_fs.tail(self.bridge_log)}"
            )
        return process

    @staticmethod
    def _end(process: subprocess.Popen | None, sig: int) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def start_bridge(self, env: dict[str, str] | None = None) -> None:
        """`toxbridge run`. env: extra environment for it (e.g. NOTIFY_SOCKET)."""
        self._bridge = self._spawn("run", self._bridge_listens, env)

    def stop_bridge(self, sig: int = signal.SIGTERM) -> None:
        self._end(self._bridge, sig)
        self._bridge = None

    def start_routes(self, env: dict[str, str] | None = None) -> None:
        """`toxbridge routes`, the socketmap and milter Postfix asks."""
        self._routes = self._spawn("routes", self._routes_listen, env)

    def stop_routes(self, sig: int = signal.SIGTERM) -> None:
        self._end(self._routes, sig)
        self._routes = None

    @property
    def bridge_pid(self) -> int | None:
        return self._bridge.pid if self._bridge else None

    @property
    def routes_pid(self) -> int | None:
        return self._routes.pid if self._routes else None

    def stop(self) -> None:
        for step in (self.stop_bridge, self.stop_routes, self.postfix.stop, self.dovecot.stop):
            try:
                with self.inside():
                    step()
            except Exception as e:  # stop everything even when one part fails
                print(f"household {self.name}: {step.__qualname__} failed: {e}", file=sys.stderr)

    def log_mark(self) -> int:
        """A position in the bridge log; wait_log(since=mark) looks only at what comes after."""
        try:
            return self.bridge_log.stat().st_size
        except OSError:
            return 0

    def log_tail(self, lines: int = 40) -> str:
        return _fs.tail(self.bridge_log, lines)

    def log_has(self, pattern: str, since: int = 0) -> bool:
        try:
            with open(self.bridge_log, "rb") as log:
                log.seek(since)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return False
        return re.search(pattern, text) is not None

    def wait_log(self, pattern: str, timeout: float, since: int = 0) -> None:
        if not wait_until(lambda: self.log_has(pattern, since), timeout, interval=0.1):
            raise TimeoutError(f"{self.name}: no log line /{pattern}/ within {timeout}s:\n{self.log_tail()}")

    def wait_inbox(self, user: str, count: int, timeout: float) -> list[bytes]:
        """INBOX once it holds at least `count` messages."""
        box: list[bytes] = []

        def enough() -> bool:
            nonlocal box
            with self.inside():
                box = self.dovecot.fetch_inbox(user)
            return len(box) >= count

        if not wait_until(enough, timeout, interval=0.2):
            raise TimeoutError(f"{self.name}/{user}: {len(box)} of {count} messages after {timeout}s")
        return box


def befriend_all(
    a: Household, a_user: str, peers: list[tuple[Household, str]], timeout: float = 60.0
) -> None:
    """Make a's identity a friend of each peer identity through the real path: a mail to the
    peer's full Tox ID makes a's bridge send a friend request (Postfix defers that mail, 4.4.1),
    the peer's bridge accepts it (friend_requests: accept), both see the other's greeting."""
    key_a = a.tox_ids[a_user][:64].lower()
    a.send(
        a.address(a_user),
        [b.tox_address(u) for b, u in peers],
        b"Subject: friend request\r\n\r\nThis mail waits until the friendship is up.\r\n",
    )
    for b, b_user in peers:
        key_b = b.tox_ids[b_user][:64].lower()
        b.wait_log(f"{b_user}: accepted friend request from {key_a}", timeout)
        a.wait_log(f"{a_user}: friend {key_b[:8]} is a bridge", timeout)
        b.wait_log(f"{b_user}: friend {key_a[:8]} is a bridge", timeout)
