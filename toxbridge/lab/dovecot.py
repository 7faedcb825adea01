"""A private Dovecot instance on loopback, built from deploy/dovecot/toxbridge.conf."""

from __future__ import annotations

import imaplib
import os
import time
from pathlib import Path

from . import _fs
from .ports import port_accepts, wait_until

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

# The one host path inside a section of the deploy file (sections cannot be
# overridden by a later definition the way plain settings can).
DEPLOY_SIEVE_PATH = "/etc/dovecot/sieve/toxbridge-dedup.sieve"
DEPLOY_PASSWD_PATH = "/etc/dovecot/toxbridge.passwd"


class Dovecot:
    """Dovecot for one household: LMTP, IMAP and POP3 on 127.0.0.1.

    `root` must sit under world-traversable parents (use
    ``tempfile.mkdtemp(dir="/tmp")``); it is made 0755. Everything of the
    instance (base_dir, state_dir, mail, log) lives under it, so it never
    touches /run/dovecot or a system Dovecot.
    """

    def __init__(
        self, root: Path, name: str, users: dict[str, str], lmtp_port: int, imap_port: int, pop3_port: int
    ):
        self.root = Path(root)
        self.name = name
        self.users = dict(users)
        self.lmtp_port = lmtp_port
        self.imap_port = imap_port
        self.pop3_port = pop3_port
        self.dir = self.root / f"dovecot-{name}"
        self.config_file = self.dir / "dovecot.conf"
        self.deploy_copy = self.dir / "toxbridge.conf"
        self.passwd_file = self.dir / "users.passwd"
        self.base_dir = self.dir / "run"
        self.auth_socket = self.base_dir / "auth-postfix"  # SASL for the submission service
        self.state_dir = self.dir / "state"
        self.mail_dir = self.dir / "mail"
        self.log_path = self.dir / "dovecot.log"
        self.startup_log = self.dir / "startup.log"
        self._started = False

    # --- configuration ----------------------------------------------------

    def write_config(self) -> None:
        _fs.prepare_root(self.root)
        vmail = _fs.ensure_system_user("vmail")
        for d in (self.dir, self.base_dir, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self.mail_dir.mkdir(exist_ok=True)
        os.chown(self.mail_dir, vmail.pw_uid, vmail.pw_gid)
        self.mail_dir.chmod(0o750)
        for user in self.users:  # as deploy says: the dedup Sieve cannot lock in a missing home
            home = self.mail_dir / user.lower()
            home.mkdir(exist_ok=True)
            os.chown(home, vmail.pw_uid, vmail.pw_gid)
            home.chmod(0o700)

        # {PLAIN}: it is a lab; the scheme prefix overrides the deploy default.
        lines = [f"{u.lower()}:{{PLAIN}}{pw}" for u, pw in self.users.items()]
        self.passwd_file.write_text("\n".join(lines) + "\n")
        self.passwd_file.chmod(0o644)

        deploy = (_fs.deploy_dir() / "dovecot" / "toxbridge.conf").read_text()
        if DEPLOY_PASSWD_PATH not in deploy:
            raise RuntimeError(f"deploy/dovecot/toxbridge.conf no longer names {DEPLOY_PASSWD_PATH}")
        if DEPLOY_SIEVE_PATH not in deploy:
            raise RuntimeError(f"deploy/dovecot/toxbridge.conf no longer names {DEPLOY_SIEVE_PATH}")
        sieve = self.dir / "toxbridge-dedup.sieve"
        sieve.write_text((_fs.deploy_dir() / "dovecot" / "toxbridge-dedup.sieve").read_text())
        sieve.chmod(0o644)
        self.deploy_copy.write_text(
            deploy.replace(DEPLOY_PASSWD_PATH, str(self.passwd_file)).replace(DEPLOY_SIEVE_PATH, str(sieve))
        )

        self.config_file.write_text(f"""\
# Lab instance {self.name}: per-instance paths, then the shipped file, then overrides.
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = dovecot-lab-{self.name}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}

!include {self.deploy_copy}

# --- lab overrides (later plain settings and same-named listeners win) ---
listen = 127.0.0.1
hostname = {self.name}.dovecot.lab.invalid
ssl = no
disable_plaintext_auth = no
mail_home = {self.mail_dir}/%Ln
service lmtp {{
  inet_listener lmtp {{
    port = {self.lmtp_port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
# Postfix's submission service checks the users' passwords here (SASL), as the playbook sets up.
auth_mechanisms = plain login
service auth {{
  unix_listener {self.auth_socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
""")

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self.write_config()
        # Compiled once, as deploy says (`sievec`): the LMTP processes cannot write the binary
        # next to the script and otherwise log two errors per delivery, compiling each time.
        sieve = self.dir / "toxbridge-dedup.sieve"
        compiled = _fs.run(["sievec", "-c", str(self.config_file), str(sieve)])
        if compiled.returncode != 0:
            raise RuntimeError(f"sievec {sieve} failed: {compiled.stderr}")
        sieve.with_suffix(".svbin").chmod(0o644)
        t0 = time.monotonic()
        rc = _fs.run_daemon_start(["dovecot", "-c", str(self.config_file)], self.startup_log)
        if rc != 0:
            raise RuntimeError(
                f"dovecot {self.name} failed to start (rc={rc}):\n"
                f"{_fs.tail(self.startup_log)}\n{_fs.tail(self.log_path)}"
            )
        self._started = True
        ok = wait_until(
            lambda: (
                port_accepts(self.lmtp_port) and port_accepts(self.imap_port) and port_accepts(self.pop3_port)
            ),
            START_TIMEOUT,
        )
        if not ok:
            raise RuntimeError(
                f"dovecot {self.name}: ports {self.lmtp_port}/{self.imap_port}/"
                f"{self.pop3_port} not accepting after {START_TIMEOUT}s:\n"
                f"{_fs.tail(self.log_path)}"
            )
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        if not self._started:
            return
        t0 = time.monotonic()
        pid = _fs.read_pid(self.base_dir / "master.pid")
        _fs.run(["doveadm", "-c", str(self.config_file), "stop"])
        _fs.wait_exit(pid, STOP_TIMEOUT, f"dovecot {self.name}")
        self._started = False
        self.stop_seconds = time.monotonic() - t0

    # --- mail ---------------------------------------------------------------

    def fetch_inbox(self, user: str) -> list[bytes]:
        """Every message in `user`'s INBOX, raw RFC 822 bytes, in UID order."""
        imap = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        try:
            imap.login(user, self.users[user])
            imap.select("INBOX", readonly=True)
            typ, data = imap.uid("SEARCH", "ALL")
            if typ != "OK":
                raise RuntimeError(f"IMAP SEARCH failed: {data!r}")
            out: list[bytes] = []
            for uid in data[0].split():
                typ, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                if typ != "OK":
                    raise RuntimeError(f"IMAP FETCH {uid!r} failed: {parts!r}")
                out.extend(p[1] for p in parts if isinstance(p, tuple))
            imap.logout()
            return out
        finally:
            try:
                imap.shutdown()
            except OSError:
                pass

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
