"""The Ansible playbook (issue 5): lint, then real runs against this machine.

Two households are provisioned by ansible/site.yml with `connection: local`; a test inventory
keeps every path (configs, queues, mailboxes, virtualenvs, profiles) under the lab root and every
port free. There is no systemd here, so the playbook only writes files; the tests start what it
wrote (Postfix, Dovecot, toxbridge as its system user) and send a mail the way Thunderbird does:
submission with STARTTLS and a password, over Tox, read back over IMAP with STARTTLS.
"""

from __future__ import annotations

import email
import imaplib
import json
import os
import pwd
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from toxbridge.lab import _fs
from toxbridge.lab.ports import free_port, port_accepts, socket_accepts, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
ANSIBLE = REPO / "ansible"
WHEELS = REPO / ".wheels"  # `make wheels`: pip cannot reach PyPI in the test namespace
SYSTEM_USER = "tbansible"  # the bridges' system user, apart from a real `toxbridge`
NODE_USER = "tbansible-dht"  # the family node's, apart from a real `tox-bootstrapd`
PLAYBOOK_TIMEOUT = 900
CONNECT = 90.0
ARRIVE = 60.0
PASSWORDS = {"alice": "alice-secret", "carol": "carol-secret", "bob": "bob-secret"}


def ansible_env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_HOME": str(root / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(root / "ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(root / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        # Both households are this machine: one at a time, or both would create the same
        # system users at once (useradd takes a lock on /etc/passwd).
        "ANSIBLE_FORKS": "1",
    }


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, unreachable, failed, ...}."""
    hosts = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


def password_hash(password: str) -> str:
    made = _fs.run(["doveadm", "pw", "-s", "ARGON2ID", "-p", password])
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@dataclass
class Home:
    name: str
    dir: Path
    domain: str
    users: list[str]
    ports: dict[str, int]
    tox_only: bool
    node: bool  # runs the family's tox-bootstrapd
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def postfix_dir(self) -> Path:
        return self.dir / "postfix" / "etc"

    @property
    def dovecot_conf(self) -> Path:
        return self.dir / "dovecot" / "etc" / "dovecot.conf"

    @property
    def toxbridge_config(self) -> Path:
        return self.dir / "toxbridge-etc" / "toxbridge.yaml"

    @property
    def toxbridge(self) -> Path:
        return self.dir / "venv" / "bin" / "toxbridge"

    @property
    def cert(self) -> Path:
        return self.dir / "tls" / "mail.crt"

    def host_vars(self) -> dict:
        d, p = self.dir, self.ports
        no_apt_update = {
            f"{role}_apt_update_cache": False
            for role in ("postfix", "dovecot", "toxbridge", "tox_bootstrapd")
        }
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
            "household_domain": self.domain,
            "household_hostname": f"mail.{self.domain}",
            "household_users": [
                {"mailbox": u, "name": u.title(), "password_hash": password_hash(PASSWORDS[u])}
                for u in self.users
            ],
            **no_apt_update,
            "tls_cert_file": str(d / "tls" / "mail.crt"),
            "tls_key_file": str(d / "tls" / "mail.key"),
            "postfix_config_dir": str(self.postfix_dir),
            "postfix_queue_dir": str(d / "postfix" / "spool"),
            "postfix_data_dir": str(d / "postfix" / "data"),
            "postfix_maillog_file": str(d / "postfix" / "maillog"),
            "postfix_mydestination": "",
            "postfix_alias_maps": "",
            "postfix_chroot": "n",
            "postfix_inet_interfaces": "127.0.0.1",
            "postfix_inet_protocols": "ipv4",
            "postfix_smtp_listen": f"127.0.0.1:{p['smtp']}",
            "postfix_submission_listen": f"127.0.0.1:{p['submission']}",
            "postfix_tox_only": self.tox_only,
            "dovecot_instance_dir": str(d / "dovecot"),
            "dovecot_config_dir": str(d / "dovecot" / "etc"),
            "dovecot_mail_root": str(d / "mail"),
            "dovecot_listen": "127.0.0.1",
            **{f"dovecot_{k}_port": p[k] for k in ("lmtp", "imap", "pop3", "imaps", "pop3s")},
            "toxbridge_venv": str(d / "venv"),
            "toxbridge_pip_extra_args": f"--no-index --find-links {WHEELS}",
            "toxbridge_system_user": SYSTEM_USER,
            "toxbridge_config_dir": str(d / "toxbridge-etc"),
            "toxbridge_state_dir": str(d / "toxbridge-state"),
            "toxbridge_systemd_dir": str(d / "systemd"),
            "thunderbird_autoconfig_dir": str(d / "www"),
            "thunderbird_autoconfig_submission_port": p["submission"],
            "tox_bootstrapd_enabled": self.node,
            "tox_bootstrapd_user": NODE_USER,
            "tox_bootstrapd_config_file": str(d / "tox-bootstrapd.conf"),
            "tox_bootstrapd_state_dir": str(d / "tox-bootstrapd"),
            "tox_bootstrapd_port": p["dht"],
            "tox_bootstrapd_tcp_port": p["relay"],
            "tox_bootstrapd_address": "127.0.0.1",
            "tox_bootstrapd_systemd_dir": str(d / "systemd"),
        }

    # --- the daemons the playbook would leave to systemd ------------------------------------

    def _spawn(self, user: str, cmd: list[str], log: str) -> subprocess.Popen:
        with open(self.dir / log, "ab") as out:
            process = subprocess.Popen(
                ["runuser", "-u", user, "--", *cmd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start(self) -> None:
        log = self.dir / "start.log"
        if self.node:  # as its unit would: the family's DHT node and TCP relay
            self._spawn(
                NODE_USER,
                [
                    "tox-bootstrapd",
                    "--foreground",
                    "--log-backend=stdout",
                    f"--config={self.dir / 'tox-bootstrapd.conf'}",
                ],
                "tox-bootstrapd.log",
            )
        # As the units order them: routes before Postfix (its first lookups find the socketmap).
        routes = self._spawn(
            SYSTEM_USER,
            [str(self.toxbridge), "--config", str(self.toxbridge_config), "routes"],
            "toxbridge.log",
        )
        assert _fs.run_daemon_start(["postfix", "-c", str(self.postfix_dir), "start"], log) == 0, _fs.tail(
            log
        )
        assert _fs.run_daemon_start(["dovecot", "-c", str(self.dovecot_conf)], log) == 0, _fs.tail(log)
        bridge = self._spawn(
            SYSTEM_USER, [str(self.toxbridge), "--config", str(self.toxbridge_config), "run"], "toxbridge.log"
        )
        ports = [self.ports[k] for k in ("smtp", "submission", "lmtp", "imap")] + (
            [self.ports["relay"]] if self.node else []
        )
        # The playbook's default: the bridge's unix sockets in Postfix's queue directory.
        sockets = [
            self.dir / "postfix" / "spool" / "toxbridge" / name for name in ("lmtp", "socketmap", "milter")
        ]
        assert wait_until(
            lambda: (
                (all(port_accepts(p) for p in ports) and all(socket_accepts(s) for s in sockets))
                or bridge.poll() is not None
                or routes.poll() is not None
            ),
            60,
        ), f"{self.name}: not all of {ports} and {sockets} accept\n{_fs.tail(self.dir / 'toxbridge.log')}"

    def stop(self) -> None:
        for process in self.processes:  # runuser and what it runs: one process group each
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        postfix_pid = _fs.read_pid(self.dir / "postfix" / "spool" / "pid" / "master.pid")
        _fs.run(["postfix", "-c", str(self.postfix_dir), "stop"])
        dovecot_pid = _fs.read_pid(self.dir / "dovecot" / "run" / "master.pid")
        _fs.run(["doveadm", "-c", str(self.dovecot_conf), "stop"])
        _fs.wait_exit(postfix_pid, 30, f"postfix {self.name}")
        _fs.wait_exit(dovecot_pid, 30, f"dovecot {self.name}")

    def status(self) -> dict:
        done = _fs.run([str(self.toxbridge), "--config", str(self.toxbridge_config), "status", "--json"])
        return json.loads(done.stdout)

    # --- what a mail client does ---------------------------------------------------------

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        context.check_hostname = False  # the certificate names mail.DOMAIN; we connect to 127.0.0.1
        return context

    def submit(self, login: str, sender: str, recipient: str, message: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30) as smtp:
            smtp.ehlo()
            assert "auth" not in smtp.esmtp_features, "submission offers AUTH before STARTTLS"
            smtp.starttls(context=self.tls())
            smtp.ehlo()
            smtp.login(login, PASSWORDS[login])
            smtp.sendmail(sender, [recipient], message)

    def inbox(self, user: str) -> list[bytes]:
        imap = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=30)
        try:
            imap.starttls(ssl_context=self.tls())
            imap.login(user, PASSWORDS[user])
            imap.select("INBOX", readonly=True)
            _, data = imap.uid("SEARCH", "ALL")  # no charset
            messages: list[bytes] = []
            for uid in data[0].split():
                _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                messages.extend(p[1] for p in parts if isinstance(p, tuple))
            return messages
        finally:
            imap.logout()


def home(root: Path, name: str, users: list[str], tox_only: bool, node: bool) -> Home:
    keys = (
        "smtp",
        "submission",
        "lmtp",
        "imap",
        "pop3",
        "imaps",
        "pop3s",
        "dht",
        "relay",
    )
    # Made here, as / and /var are on a Pi: Ansible gives the directories it has to create on the
    # way to a path that path's owner and mode (a 0700 state directory would lock out the rest).
    _fs.prepare_root(root / name)
    return Home(name, root / name, f"{name}.test", users, {k: free_port() for k in keys}, tox_only, node)


def playbook(root: Path, inventory: Path, *options: str) -> subprocess.CompletedProcess:
    return _fs.run(
        ["ansible-playbook", "-i", str(inventory), *options, "site.yml"],
        cwd=ANSIBLE,
        env=ansible_env(root),
        timeout=PLAYBOOK_TIMEOUT,
    )


# --- static checks -------------------------------------------------------------------------


def test_syntax_check(tmp_path):
    done = _fs.run(
        ["ansible-playbook", "--syntax-check", "-i", "inventory.example.yml", "site.yml"],
        cwd=ANSIBLE,
        env=ansible_env(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ansible_lint(tmp_path):
    done = _fs.run(
        ["ansible-lint", "--offline", "--nocolor", "site.yml", "inventory.example.yml"],
        cwd=ANSIBLE,
        env={**ansible_env(tmp_path), "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failure(s), 0 warning(s)" in done.stdout + done.stderr


def test_a_mistake_in_the_inventory_stops_every_household_before_any_change(lab_root):
    root = _fs.prepare_root(lab_root / f"ansible-bad-{uuid.uuid4().hex[:6]}")
    homes = [
        home(root, "ha", ["alice"], tox_only=False, node=False),
        home(root, "hb", ["bob"], tox_only=True, node=False),
    ]
    hosts = {h.name: h.host_vars() for h in homes}
    del hosts["hb"]["household_users"][0]["password_hash"]
    inventory = root / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"households": {"hosts": hosts}}}}))
    done = playbook(root, inventory)
    assert done.returncode != 0
    assert "hb, user bob: needs `mailbox`" in done.stdout and "`password_hash` with its scheme" in done.stdout
    counts = recap(done.stdout)
    assert set(counts) == {"ha", "hb"} and all(c["changed"] == 0 for c in counts.values())
    assert [list((root / h.name).iterdir()) for h in homes] == [[], []]


# --- real runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def family(lab_root):
    """ha (alice, carol; mail beyond Tox routed the normal way; runs the family's Tox node) and hb
    (bob; Tox only). Nothing else on the Tox network: they find each other through ha's node."""
    assert list(WHEELS.glob("*.whl")), f"no wheels in {WHEELS}: run `make wheels` (make test does)"
    root = _fs.prepare_root(lab_root / f"ansible-{uuid.uuid4().hex[:6]}")
    homes = [
        home(root, "ha", ["alice", "carol"], tox_only=False, node=True),
        home(root, "hb", ["bob"], tox_only=True, node=False),
    ]
    inventory = root / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {"all": {"children": {"households": {"hosts": {h.name: h.host_vars() for h in homes}}}}}
        )
    )
    first = playbook(root, inventory)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    try:
        yield root, inventory, homes, first
    finally:
        for h in homes:
            h.stop()


@pytest.fixture(scope="module")
def running(family):
    _, _, homes, _ = family
    for h in homes:
        h.start()

    def friends_online() -> bool:
        for h in homes:
            friends = [c for c in h.status()["checks"] if c["name"].startswith("friend ")]
            if not friends or any(c["level"] != "ok" for c in friends):
                return False
        return True

    assert wait_until(friends_online, CONNECT, interval=1.0), [h.status() for h in homes]
    return homes


def test_first_run_changes_and_fails_nothing(family):
    _, _, homes, first = family
    counts = recap(first.stdout)
    assert set(counts) == {h.name for h in homes}
    assert all(c["failed"] == 0 and c["unreachable"] == 0 and c["changed"] > 0 for c in counts.values())


def test_written_configs_pass_their_own_checks(family):
    _, _, homes, _ = family
    for h in homes:
        checks = [
            ["postfix", "-c", str(h.postfix_dir), "check"],
            ["doveconf", "-c", str(h.dovecot_conf), "-n"],
            [str(h.toxbridge), "--config", str(h.toxbridge_config), "check-config"],
        ]
        for cmd in checks:
            done = _fs.run(cmd)
            assert done.returncode == 0 and "warning" not in done.stderr.lower(), (
                cmd,
                done.stdout,
                done.stderr,
            )
        main_cf = _fs.run(
            ["postconf", "-c", str(h.postfix_dir), "-h", "virtual_mailbox_domains", "default_transport"]
        )
        domains, default_transport = main_cf.stdout.splitlines()
        assert domains == h.domain
        assert ("not a Tox contact" in default_transport) == h.tox_only
        checks = _fs.run(["postconf", "-c", str(h.postfix_dir), "-hx", "header_checks"]).stdout.strip()
        forged = _fs.run(
            ["postmap", "-c", str(h.postfix_dir), "-q", "Authentication-Results: bridge; x-tox=pass", checks]
        )
        assert forged.stdout.strip() == "IGNORE", (checks, forged)  # issue 15 point 2
        state = h.dir / "toxbridge-state" / "profiles"
        for user in h.users:
            profile = (state / f"{user}.tox").stat()
            assert profile.st_mode & 0o777 == 0o600 and profile.st_uid == pwd.getpwnam(SYSTEM_USER).pw_uid


def test_every_member_is_a_contact_of_the_other_households(family):
    _, _, homes, _ = family
    ids = {}
    for h in homes:
        shown = _fs.run([str(h.toxbridge), "--config", str(h.toxbridge_config), "id"])
        ids.update(
            {f"{u}@{h.domain}": tox_id for u, tox_id in (line.split() for line in shown.stdout.splitlines())}
        )
    for h in homes:
        book = yaml.safe_load((h.dir / "toxbridge-etc" / "contacts.yaml").read_text())
        listed = {entry["addresses"][0]: entry["tox_id"] for entry in book}
        others = {address: tox_id for address, tox_id in ids.items() if not address.endswith("@" + h.domain)}
        assert listed == others


def test_systemd_units_pass_systemd_analyze(family):
    """No systemd runs here, but systemd-analyze reads the units as systemd would: an unknown or
    misspelt setting is a warning (the test wants none), a missing program an error."""
    _, _, homes, _ = family
    units = [
        homes[0].dir / "systemd" / name
        for name in ("toxbridge.service", "toxbridge-routes.service", "tox-bootstrapd.service")
    ]
    done = _fs.run(["systemd-analyze", "verify", *map(str, units)])
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    unit = units[0].read_text()
    assert f"ExecStart={homes[0].toxbridge} --config {homes[0].toxbridge_config} run" in unit
    assert f"User={SYSTEM_USER}" in unit
    routes = units[1].read_text()
    assert f"ExecStart={homes[0].toxbridge} --config {homes[0].toxbridge_config} routes" in routes
    assert f"User={SYSTEM_USER}" in routes and "Before=postfix.service" in routes


def test_households_join_through_the_family_node(family):
    """ha's node is the only Tox node there is: `running` shows the friendships come up through it."""
    _, _, homes, _ = family
    node = homes[0]
    keys = node.dir / "tox-bootstrapd" / "keys"
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.stat().st_uid == pwd.getpwnam(NODE_USER).pw_uid
    public_key = keys.read_bytes()[:32].hex()
    for h in homes:
        tox = yaml.safe_load(h.toxbridge_config.read_text())["tox"]
        assert tox["bootstrap"] == [
            {"host": "127.0.0.1", "port": node.ports["dht"], "public_key": public_key}
        ]
        assert tox["tcp_relays"] == [
            {"host": "127.0.0.1", "port": node.ports["relay"], "public_key": public_key}
        ]


def test_thunderbird_autoconfig_names_this_household(family):
    _, _, homes, _ = family
    h = homes[0]
    provider = ET.parse(h.dir / "www" / "mail" / "config-v1.1.xml").getroot().find("emailProvider")
    assert provider is not None
    assert provider.findtext("domain") == h.domain
    servers = {
        s.get("type"): s for s in [*provider.findall("incomingServer"), *provider.findall("outgoingServer")]
    }
    assert {t: int(s.findtext("port", "")) for t, s in servers.items()} == {
        "imap": h.ports["imap"],
        "pop3": h.ports["pop3"],
        "smtp": h.ports["submission"],
    }
    assert {s.findtext("socketType") for s in servers.values()} == {"STARTTLS"}
    assert {s.findtext("hostname") for s in servers.values()} == {f"mail.{h.domain}"}


def test_a_mail_from_thunderbird_crosses_to_the_other_household(running):
    ha, hb = running
    token = uuid.uuid4().hex
    message = (
        f"From: Alice <alice@{ha.domain}>\r\nTo: Bob <bob@{hb.domain}>\r\nSubject: over Tox {token}\r\n"
        f"Message-ID: <{token}@{ha.domain}>\r\n\r\nHello Bob, this went through the provisioned Pis.\r\n"
    )
    ha.submit("alice", f"alice@{ha.domain}", f"bob@{hb.domain}", message.encode())

    def arrived() -> list[bytes]:
        return [m for m in hb.inbox("bob") if token.encode() in m]

    assert wait_until(arrived, ARRIVE, interval=0.5), _fs.tail(ha.dir / "toxbridge.log")
    got = email.message_from_bytes(arrived()[0])
    assert got["From"] == f"Alice <alice@{ha.domain}>"
    assert "x-tox=pass" in got.get("Authentication-Results", "")

    reply = uuid.uuid4().hex
    hb.submit(
        "bob",
        f"bob@{hb.domain}",
        f"alice@{ha.domain}",
        f"From: bob@{hb.domain}\r\nTo: alice@{ha.domain}\r\nSubject: re {reply}\r\n\r\nGot it.\r\n".encode(),
    )
    assert wait_until(lambda: any(reply.encode() in m for m in ha.inbox("alice")), ARRIVE, interval=0.5), (
        _fs.tail(hb.dir / "toxbridge.log")
    )
    for h in running:  # e.g. the dedup records of a mailbox's first mail, which once failed to lock
        errors = [
            line for line in (h.dir / "dovecot" / "dovecot.log").read_text().splitlines() if "Error:" in line
        ]
        assert errors == []


def test_submission_takes_only_the_users_own_address(running):
    ha, hb = running
    # Postfix says so at RCPT (smtpd_delay_reject), for the sender.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        ha.submit(
            "carol", f"alice@{ha.domain}", f"bob@{hb.domain}", b"Subject: in alice's name\r\n\r\nno\r\n"
        )
    code, text = refused.value.recipients[f"bob@{hb.domain}"]
    assert code == 553 and b"not owned by user carol" in text


def test_mail_to_a_non_contact_gets_a_notice_or_is_refused(running):
    """Issue 16 through the playbook's wiring (submission's smtpd_milters, milter_listen): ha
    (ordinary_mail: notify) puts one notice into alice's INBOX before the 250; hb (Tox only)
    refuses at RCPT. The mail itself cannot leave this namespace: it is taken out of ha's queue."""
    ha, hb = running
    token = uuid.uuid4().hex
    stranger = "someone@example.net"
    message = f"From: alice@{ha.domain}\r\nTo: {stranger}\r\nSubject: outside {token}\r\n\r\nthe body\r\n"
    ha.submit("alice", f"alice@{ha.domain}", stranger, message.encode())
    try:
        notices = [
            m for m in ha.inbox("alice") if token.encode() in m and b"Auto-Submitted: auto-generated" in m
        ]
        assert len(notices) == 1 and stranger.encode() in notices[0] and b"the body" not in notices[0]
    finally:
        for entry in _fs.run(["postqueue", "-c", str(ha.postfix_dir), "-j"]).stdout.splitlines():
            queued = json.loads(entry)
            if any(r["address"] == stranger for r in queued["recipients"]):
                _fs.run(["postsuper", "-c", str(ha.postfix_dir), "-d", queued["queue_id"]])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        hb.submit("bob", f"bob@{hb.domain}", stranger, b"Subject: out\r\n\r\nno\r\n")
    code, text = refused.value.recipients[stranger]
    assert code == 550 and b"not a Tox contact" in text


class IMAPFromLAN(imaplib.IMAP4):
    """A client at another address than the server's: Dovecot trusts a connection from its own
    address (127.0.0.1 to 127.0.0.1) as if it were TLS, a laptop on the LAN is not trusted."""

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=("127.0.0.2", 0))


def test_imap_takes_passwords_only_inside_tls(running):
    ha, _ = running
    imap = IMAPFromLAN("127.0.0.1", ha.ports["imap"], timeout=30)
    try:
        assert "LOGINDISABLED" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("alice", PASSWORDS["alice"])
    finally:
        imap.logout()


def test_second_run_changes_nothing(family, running):
    root, inventory, homes, _ = family
    second = playbook(root, inventory)
    assert second.returncode == 0, second.stdout[-6000:]
    counts = recap(second.stdout)
    changed = [line for line in second.stdout.splitlines() if line.startswith("changed:")]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()) and set(counts) == {
        h.name for h in homes
    }, "\n".join(changed)


def test_a_run_limited_to_one_household_keeps_the_others_in_its_contacts(family, running):
    root, inventory, homes, _ = family
    contacts = [(h.dir / "toxbridge-etc" / "contacts.yaml").read_text() for h in homes]
    limited = playbook(root, inventory, "--limit", "ha")
    assert limited.returncode != 0
    assert "hb's Tox IDs are unknown in this run" in limited.stdout
    assert [(h.dir / "toxbridge-etc" / "contacts.yaml").read_text() for h in homes] == contacts
