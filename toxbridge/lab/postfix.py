"""A private Postfix instance on loopback, built from deploy/postfix/.

main.cf = the few settings any private instance needs (own queue, data and
log, loopback only, no DNS) + deploy/postfix/main.cf.toxbridge (its socketmap,
the unix socket toxbridge/socketmap relative to the queue directory, kept as it
is, or 127.0.0.1:socketmap_port) + `postconf -e` for the host-specific values
(domain, ports), with tox_only the settings of deploy/postfix/main.cf.tox-only,
and `extra`.
master.cf = Debian's master.cf with chroot off and smtpd bound to
127.0.0.1:smtp_port + deploy/postfix/master.cf.toxbridge verbatim.
transport.regexp = deploy/postfix/transport.regexp with the bridge's socket (in
this instance's queue directory) or port and the HOST-SPECIFIC household domain
rewritten. The bridge's socket directory is made as the playbook makes it.
"""

from __future__ import annotations

import json
import shutil
import smtplib
import time
from pathlib import Path

from . import _fs
from .ports import port_accepts, wait_until

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SYSTEM_MASTER_CF = Path("/etc/postfix/master.cf")
DEPLOY_BRIDGE_NEXTHOP = "unix:/var/spool/postfix/toxbridge/lmtp"
DEPLOY_SOCKETMAP = "socketmap:unix:toxbridge/socketmap:"
# The bridge's sockets, in the queue directory as on a household (mail/listen.py).
BRIDGE_SOCKET_DIR = "toxbridge"
DEPLOY_MILTER = "-o smtpd_milters=unix:toxbridge/milter"
DEPLOY_LOCAL_DOMAIN = r"/@home\.example$/"
DEPLOY_ALIAS_DOMAIN = "@home.example "
DEPLOY_ALIAS_TARGET = "mom@home.example"


class Postfix:
    """Postfix for one household: SMTP on 127.0.0.1:smtp_port.

    Mail for `domain` users goes to Dovecot LMTP on 127.0.0.1:dovecot_lmtp_port;
    mail for `@tox` goes to the bridge on 127.0.0.1:bridge_lmtp_port (None: the
    unix socket bridge_lmtp_socket); any other address is asked to the socketmap
    on 127.0.0.1:socketmap_port (None: the unix socket socketmap_socket; nobody
    serving it means the bridge is down). Whatever it does not claim
    takes the lab's default_transport (an error bounce), or with `tox_only` the
    deploy/postfix/main.cf.tox-only bounce. `chrooted` names master.cf services
    that run chrooted in the queue directory as on Debian (the lab runs the rest
    unchrooted: a chroot needs copies of /etc files). `services`: more master.cf
    lines (e.g. an smtpd on a household's LAN address, for mail from other
    households). `root` must sit under
    world-traversable parents (``tempfile.mkdtemp(dir="/tmp")``).
    """

    def __init__(
        self,
        root: Path,
        name: str,
        domain: str,
        smtp_port: int,
        local_users: list[str],
        dovecot_lmtp_port: int,
        bridge_lmtp_port: int | None,
        extra: dict[str, str] | None = None,
        *,
        socketmap_port: int | None = None,
        tox_only: bool = False,
        chrooted: tuple[str, ...] = (),
        milter_port: int | None = None,
        submission_port: int | None = None,
        sasl_path: str | None = None,
        services: list[str] | None = None,
    ):
        self.root = Path(root)
        self.name = name
        self.domain = domain
        self.smtp_port = smtp_port
        self.local_users = list(local_users)
        self.dovecot_lmtp_port = dovecot_lmtp_port
        self.bridge_lmtp_port = bridge_lmtp_port
        self.socketmap_port = socketmap_port
        self.tox_only = tox_only
        self.chrooted = chrooted
        self.milter_port = milter_port
        self.submission_port = submission_port
        self.sasl_path = sasl_path
        self.extra = dict(extra or {})
        self.services = list(services or [])
        self.dir = self.root / f"postfix-{name}"
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "spool"
        self.bridge_socket_dir = self.queue_dir / BRIDGE_SOCKET_DIR
        self.bridge_lmtp_socket = self.bridge_socket_dir / "lmtp"
        self.socketmap_socket = self.bridge_socket_dir / "socketmap"
        self.milter_socket = self.bridge_socket_dir / "milter"
        self.data_dir = self.dir / "data"
        self.maillog = self.dir / "maillog"
        self.startup_log = self.dir / "startup.log"
        self.myhostname = f"{name}.postfix.lab.invalid"
        self._started = False

    @property
    def bridge_nexthop(self) -> str:
        """The bridge's LMTP as a Postfix nexthop (what transport.regexp and the socketmap say)."""
        if self.bridge_lmtp_port is None:
            return f"unix:{self.bridge_lmtp_socket}"
        return f"inet:127.0.0.1:{self.bridge_lmtp_port}"

    # --- configuration ----------------------------------------------------

    def _postconf(self, *args: str) -> str:
        p = _fs.run(["postconf", "-c", str(self.config_dir), *args])
        if p.returncode != 0:
            raise RuntimeError(f"postconf {' '.join(args)} failed: {p.stderr}")
        return p.stdout

    def postconf(self, settings: dict[str, str]) -> None:
        """Change main.cf settings of the running instance and reload it."""
        self._postconf("-e", *(f"{k}={v}" for k, v in settings.items()))
        self.reload()

    def reload(self) -> None:
        """`postfix reload`: new daemon processes (they forget what they looked up)."""
        rc = _fs.run_daemon_start(["postfix", "-c", str(self.config_dir), "reload"], self.startup_log)
        if rc != 0:
            raise RuntimeError(f"postfix {self.name} reload failed (rc={rc}):\n{_fs.tail(self.startup_log)}")

    def write_config(self) -> None:
        _fs.prepare_root(self.root)
        for d in (self.dir, self.config_dir, self.queue_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self.data_dir.mkdir(exist_ok=True)
        shutil.chown(self.data_dir, "postfix", "postfix")
        self.data_dir.chmod(0o700)
        # As the playbook makes it: the bridge (root here) owns it, Postfix's group may enter, and
        # set-group-id gives the sockets made in it that group.
        self.bridge_socket_dir.mkdir(exist_ok=True)
        shutil.chown(self.bridge_socket_dir, "root", "postfix")
        self.bridge_socket_dir.chmod(0o2750)
        deploy = _fs.deploy_dir() / "postfix"

        base = f"""\
# Lab instance {self.name}: what any private instance needs.
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = {self.myhostname}
mydomain = {self.domain}
myorigin = $mydomain
# No local(8) delivery: household users are virtual (Dovecot).
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery in the lab
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
# No DNS in the lab (it runs in a loopback-only namespace).
smtp_dns_support_level = disabled
smtp_host_lookup = native
# The lab sends nothing beyond this machine: mail for anywhere but the household and @tox fails.
default_transport = error:5.7.1 the lab sends no mail beyond this machine

# ---- deploy/postfix/main.cf.toxbridge follows (socketmap port rewritten) ----
"""
        main_cf = (deploy / "main.cf.toxbridge").read_text()
        if DEPLOY_SOCKETMAP not in main_cf:
            raise RuntimeError(f"deploy/postfix/main.cf.toxbridge no longer names {DEPLOY_SOCKETMAP}")
        if self.socketmap_port is not None:
            main_cf = main_cf.replace(DEPLOY_SOCKETMAP, f"socketmap:inet:127.0.0.1:{self.socketmap_port}:")
        if DEPLOY_MILTER not in main_cf:  # what the submission service below follows
            raise RuntimeError(f"deploy/postfix/main.cf.toxbridge no longer names {DEPLOY_MILTER}")
        (self.config_dir / "main.cf").write_text(base + main_cf)
        (self.config_dir / "master.cf").write_text(
            _lab_master_cf(SYSTEM_MASTER_CF.read_text(), self.smtp_port)
            + self._submission_service()
            + "\n# ---- deploy/postfix/master.cf.toxbridge follows verbatim ----\n"
            + (deploy / "master.cf.toxbridge").read_text()
            + "".join(f"\n# lab service\n{service}\n" for service in self.services)
        )

        transport = (deploy / "transport.regexp").read_text()
        for needed in (DEPLOY_BRIDGE_NEXTHOP, DEPLOY_LOCAL_DOMAIN):
            if needed not in transport:
                raise RuntimeError(f"deploy/postfix/transport.regexp no longer names {needed}")
        local_domain = "/@" + self.domain.replace(".", "\\.") + "$/"
        (self.config_dir / "transport.regexp").write_text(
            transport.replace(DEPLOY_BRIDGE_NEXTHOP, self.bridge_nexthop).replace(
                DEPLOY_LOCAL_DOMAIN, local_domain
            )
        )
        shutil.copy(deploy / "header_checks.toxbridge", self.config_dir / "header_checks.toxbridge")
        aliases = (deploy / "virtual_aliases").read_text()
        if DEPLOY_ALIAS_DOMAIN not in aliases or DEPLOY_ALIAS_TARGET not in aliases:
            raise RuntimeError("deploy/postfix/virtual_aliases no longer names the example household")
        (self.config_dir / "virtual_aliases").write_text(  # the household's first user reads them
            aliases.replace(DEPLOY_ALIAS_TARGET, f"{self.local_users[0]}@{self.domain}").replace(
                DEPLOY_ALIAS_DOMAIN, f"@{self.domain} "
            )
        )
        (self.config_dir / "vmailbox").write_text(
            "".join(f"{u}@{self.domain}\t{u}\n" for u in self.local_users)
        )

        overrides = {
            "virtual_mailbox_domains": self.domain,
            "virtual_transport": f"lmtp:inet:127.0.0.1:{self.dovecot_lmtp_port}",
            # After the base, whose safety default_transport it must replace. With postconf -e, not
            # appended: a second default_transport line makes every Postfix command warn.
            **(main_cf_settings((deploy / "main.cf.tox-only").read_text()) if self.tox_only else {}),
            **self.extra,
        }
        self._postconf("-e", *(f"{k}={v}" for k, v in overrides.items()))
        for service in self.chrooted:
            self._postconf("-F", f"{service}/chroot=y")

    def _submission_service(self) -> str:
        """The submission service as ansible/roles/postfix writes it (STARTTLS required, the
        users' Dovecot logins, the bridge's milter), on 127.0.0.1:submission_port."""
        if self.submission_port is None:
            return ""
        if self.sasl_path is None:
            raise ValueError("a submission service needs sasl_path (Dovecot's auth socket)")
        cert, key = self_signed_certificate(self.config_dir / "tls", self.myhostname)
        return f"""
# The household's mail clients send here (lab copy of ansible/roles/postfix/templates/master.cf.j2).
127.0.0.1:{self.submission_port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_cert_file={cert}
  -o smtpd_tls_key_file={key}
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path={self.sasl_path}
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_milters={self.milter}
"""

    @property
    def milter(self) -> str:
        """The bridge's milter as smtpd_milters names it: its socket relative to the queue
        directory (as deploy/ says, for a chrooted smtpd), or 127.0.0.1:milter_port."""
        if self.milter_port is None:
            return f"unix:{BRIDGE_SOCKET_DIR}/milter"
        return f"inet:127.0.0.1:{self.milter_port}"

    @property
    def submission_service(self) -> str:
        """The submission service's name in master.cf, for `postconf -P NAME/inet/...`."""
        return f"127.0.0.1:{self.submission_port}"

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self.write_config()
        t0 = time.monotonic()
        rc = _fs.run_daemon_start(["postfix", "-c", str(self.config_dir), "start"], self.startup_log)
        if rc != 0:
            # `postfix start` runs the same checks, but its fatal errors go to
            # syslog when stderr is not a terminal: ask again on a pty.
            _, why = _fs.run_stderr_tty(["postfix", "-c", str(self.config_dir), "check"])
            raise RuntimeError(
                f"postfix {self.name} failed to start (rc={rc}): {why}\n"
                f"{_fs.tail(self.startup_log)}\n{_fs.tail(self.maillog)}"
            )
        self._started = True
        if not wait_until(lambda: port_accepts(self.smtp_port), START_TIMEOUT):
            raise RuntimeError(
                f"postfix {self.name}: SMTP port {self.smtp_port} not accepting:\n{_fs.tail(self.maillog)}"
            )
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        if not self._started:
            return
        t0 = time.monotonic()
        pid = _fs.read_pid(self.queue_dir / "pid" / "master.pid")
        _fs.run_daemon_start(["postfix", "-c", str(self.config_dir), "stop"], self.startup_log)
        _fs.wait_exit(pid, STOP_TIMEOUT, f"postfix {self.name} master")
        self._started = False
        self.stop_seconds = time.monotonic() - t0

    def __enter__(self) -> Postfix:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- queue ----------------------------------------------------------------

    def _postqueue(self, *args: str) -> str:
        p = _fs.run(["postqueue", "-c", str(self.config_dir), *args])
        if p.returncode != 0:
            raise RuntimeError(f"postqueue {' '.join(args)} failed: {p.stderr}")
        return p.stdout

    def queue(self) -> list[dict]:
        """`postqueue -j`: one dict per queued message (queue_name, queue_id, recipients, ...)."""
        return [json.loads(line) for line in self._postqueue("-j").splitlines() if line.strip()]

    def flush(self) -> None:
        self._postqueue("-f")

    def push(self, queue_id: str) -> None:
        self._postqueue("-i", queue_id)

    def wait_queue_empty(self, timeout: float) -> None:
        if not wait_until(lambda: not self.queue(), timeout, interval=0.1):
            raise TimeoutError(
                f"postfix {self.name}: queue not empty after {timeout}s: "
                f"{self.queue()!r}\n{_fs.tail(self.maillog)}"
            )

    def send(
        self, sender: str, recipients: list[str], message: bytes, source_address: str | None = None
    ) -> None:
        """Submit over SMTP; raise smtplib errors when any recipient is refused.

        `source_address` binds the client side (e.g. "127.0.0.2") to play a
        client outside mynetworks without leaving loopback.
        """
        opts = []
        if any(b > 0x7F for b in message):
            opts.append("BODY=8BITMIME")
        if not all(a.isascii() for a in [sender, *recipients]):
            opts.append("SMTPUTF8")
        src = (source_address, 0) if source_address else None
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=60, source_address=src) as s:
            refused = s.sendmail(sender, recipients, message, mail_options=opts)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)


def main_cf_settings(text: str) -> dict[str, str]:
    """The `name = value` settings of a main.cf fragment (continuation lines joined, comments dropped)."""
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and name:
            out[name] = f"{out[name]} {line.strip()}".strip()
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise ValueError(f"not a main.cf setting: {line!r}")
        name = name.strip()
        out[name] = value.strip()
    return out


def _lab_master_cf(text: str, smtp_port: int) -> str:
    """Debian's master.cf with every chroot column `n` and smtpd on 127.0.0.1:port only."""
    out = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            f = line.split()
            if len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    f[0] = f"127.0.0.1:{smtp_port}"
                f[4] = "n"
                line = "  ".join(f[:7]) + "  " + " ".join(f[7:])
        out.append(line)
    return "\n".join(out) + "\n"


def self_signed_certificate(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A throwaway key and self-signed certificate for a lab smtpd's STARTTLS: (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "smtpd-cert.pem", directory / "smtpd-key.pem"
    if cert.exists():  # made by an earlier write_config of the same instance
        return cert, key
    done = _fs.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={common_name}", "-keyout", str(key), "-out", str(cert)]
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"openssl req failed: {done.stderr}")
    key.chmod(0o600)
    return cert, key
