"""Real Postfix and Dovecot built from deploy/, on loopback.

Run inside a loopback-only namespace, from the repository root:
    unshare -n sh -c 'ip link set lo up && exec .venv/bin/pytest -q tests/test_lab.py'
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from toxbridge.lab import _fs
from toxbridge.lab.bootstrapd import BootstrapNode, LabDHT
from toxbridge.lab.dovecot import Dovecot
from toxbridge.lab.ports import free_port, wait_until
from toxbridge.lab.postfix import Postfix

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="private Postfix/Dovecot instances need root"),
    pytest.mark.skipif(
        not all(shutil.which(c) for c in ("postfix", "dovecot", "tox-bootstrapd")),
        reason="postfix, dovecot or tox-bootstrapd not installed",
    ),
]

TOX_RCPT = "ab" * 38 + "@tox"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.fixture
def root():
    # Not pytest's tmp_path: its 0700 parents stop postfix/vmail/dovenull.
    path = Path(tempfile.mkdtemp(prefix="toxbridge-lab-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def alice(root):
    """Household alice: Dovecot (alice, alan) + Postfix for alice.test; no bridge listening."""
    dovecot = Dovecot(
        root,
        "alice",
        {"alice": "alice-pw", "alan": "alan-pw"},
        lmtp_port=free_port(),
        imap_port=free_port(),
        pop3_port=free_port(),
    )
    postfix = Postfix(
        root,
        "alice",
        "alice.test",
        smtp_port=free_port(),
        local_users=["alice", "alan"],
        dovecot_lmtp_port=dovecot.lmtp_port,
        bridge_lmtp_port=None,
    )
    try:
        dovecot.start()
        postfix.start()
        yield dovecot, postfix
    finally:
        try:
            postfix.stop()
        finally:
            dovecot.stop()


def _message(attachment: bytes) -> bytes:
    b64 = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (
        b"From: Alice <alice@alice.test>\r\n"
        b"To: Alan <alan@alice.test>\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Message-ID: <lab-8bit-1@alice.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b0undary"\r\n'
        b"\r\n"
        b"--b0undary\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + "Grüße aus Köln — ☃ 日本語\r\n".encode() + b".a line that starts with a dot\r\n"
        b"..and one with two\r\n"
        b"From the start of a line\r\n"
        b"--b0undary\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="blob.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + b64 + b"--b0undary--\r\n"
    )


def _body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def test_8bit_mail_with_attachment_arrives_byte_for_byte(alice):
    dovecot, postfix = alice
    attachment = bytes(range(256)) * 64 + os.urandom(4096)
    sent = _message(attachment)

    postfix.send("alice@alice.test", ["alan@alice.test"], sent)
    postfix.wait_queue_empty(timeout=30)

    inbox = dovecot.fetch_inbox("alan")
    assert len(inbox) == 1, inbox
    got = inbox[0]
    assert _body(got) == _body(sent)
    assert b"Message-ID: <lab-8bit-1@alice.test>" in got
    parts = list(message_from_bytes(got, policy=policy.default).iter_attachments())
    assert parts[0].get_content() == attachment
    assert dovecot.fetch_inbox("alice") == []


def test_tox_mail_without_bridge_stays_deferred(alice):
    _, postfix = alice
    postfix.send("alice@alice.test", [TOX_RCPT], b"Subject: to a friend\r\n\r\nhi\r\n")

    def deferred():
        q = postfix.queue()
        return len(q) == 1 and q[0]["queue_name"] == "deferred"

    assert wait_until(deferred, 30), (postfix.queue(), _fs.tail(postfix.maillog))
    (entry,) = postfix.queue()
    qid = entry["queue_id"]
    (rcpt,) = entry["recipients"]
    assert rcpt["address"] == TOX_RCPT
    assert str(postfix.bridge_lmtp_socket) in rcpt["delay_reason"], rcpt

    # A push (what the bridge does when a friend comes online) retries at
    # once; with no bridge it is deferred again, never bounced.
    postfix.push(qid)
    assert wait_until(lambda: postfix.maillog.read_text().count(f"{qid}: to=<{TOX_RCPT}>") >= 2, 30), (
        _fs.tail(postfix.maillog)
    )
    log = postfix.maillog.read_text()
    assert f"{qid}: to=<{TOX_RCPT}>, relay=none" in log
    assert re.search(rf"{qid}: to=<{TOX_RCPT}>.*status=deferred", log)
    assert "status=bounced" not in log
    assert [e["queue_id"] for e in postfix.queue()] == [qid]


def _settings(text: str) -> dict[str, str]:
    """main.cf `key = value` lines (with continuation lines), comments dropped."""
    out: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and key:
            out[key] = f"{out[key]} {line.strip()}".strip()
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        out[key] = " ".join(value.split())
    return out


def test_running_postfix_uses_the_deploy_settings(alice):
    _, postfix = alice
    shipped = _settings((DEPLOY / "postfix" / "main.cf.toxbridge").read_text())
    running = _settings(
        subprocess.run(
            ["postconf", "-c", str(postfix.config_dir), "-n"], capture_output=True, text=True, check=True
        ).stdout
    )
    host_specific = {"virtual_mailbox_domains", "virtual_transport", "transport_maps"}
    for key, value in shipped.items():
        if key in host_specific:
            continue
        assert running.get(key) == value, key
    assert running["virtual_mailbox_domains"] == "alice.test"
    assert running["virtual_transport"] == f"lmtp:inet:127.0.0.1:{postfix.dovecot_lmtp_port}"
    # The socketmap's unix socket is relative to the queue directory: the shipped line serves as is.
    assert running["transport_maps"] == shipped["transport_maps"]
    assert "socketmap:unix:toxbridge/socketmap:transport" in shipped["transport_maps"]
    for key in (
        "message_size_limit",
        "transport_maps",
        "lmtp_host_lookup",
        "toxbridge_destination_recipient_limit",
        "smtpd_relay_restrictions",
    ):
        assert key in shipped

    service = subprocess.run(
        ["postconf", "-c", str(postfix.config_dir), "-M", "toxbridge/unix"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert service[:8] == ["toxbridge", "unix", "-", "-", "n", "-", "-", "lmtp"]
    assert "lmtp_data_done_timeout=600s" in service

    transport = (postfix.config_dir / "transport.regexp").read_text()
    assert f"/@tox$/                 toxbridge:unix:{postfix.bridge_lmtp_socket}" in transport
    assert "/@alice\\.test$/       :" in transport


def test_no_open_relay(alice):
    dovecot, postfix = alice
    restrictions = subprocess.run(
        ["postconf", "-c", str(postfix.config_dir), "-h", "smtpd_relay_restrictions"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert restrictions[-1].rstrip(",") in ("reject_unauth_destination", "defer_unauth_destination")
    assert "permit" not in [r.rstrip(",") for r in restrictions]

    # 127.0.0.2 is on loopback but outside mynetworks (127.0.0.1/32): an outside client.
    # No bridge runs here, so an address only its socketmap could route fails closed with 451
    # before the relay check (tests/test_socketmap.py); @tox is routed statically: 554.
    for rcpt, want in (
        (TOX_RCPT, (554, b"Relay access denied")),
        ("someone@example.org", (451, b"Temporary lookup failure")),
    ):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            postfix.send(
                "mallory@example.org", [rcpt], b"Subject: relay?\r\n\r\nx\r\n", source_address="127.0.0.2"
            )
        code, text = refused.value.recipients[rcpt]
        assert code == want[0] and want[1] in text, (code, text)

    # The outside client may still mail the household itself.
    postfix.send(
        "friend@example.org", ["alan@alice.test"], b"Subject: hello\r\n\r\nhi\r\n", source_address="127.0.0.2"
    )
    postfix.wait_queue_empty(timeout=30)
    assert len(dovecot.fetch_inbox("alan")) == 1
    # Unknown household users are refused at RCPT time.
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        postfix.send(
            "friend@example.org",
            ["nobody@alice.test"],
            b"Subject: x\r\n\r\nx\r\n",
            source_address="127.0.0.2",
        )


def test_servers_listen_on_loopback_only(alice):
    """Every socket our Postfix and Dovecot listen on is bound to 127.0.0.1, none to 0.0.0.0."""
    dovecot, postfix = alice
    ours = {postfix.smtp_port, dovecot.lmtp_port, dovecot.imap_port, dovecot.pop3_port}
    listeners: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].split(":")
                listeners.setdefault(int(port, 16), set()).add(address)
    for port in ours:
        assert listeners.get(port) == {"0100007F"}, (port, listeners.get(port))  # 127.0.0.1, little-endian


def test_bootstrap_node(root):
    node = BootstrapNode(root, port=free_port(), tcp_port=free_port())
    try:
        node.start()
        assert node.public_key is not None and len(node.public_key) == 32
        assert wait_until(lambda: "Public Key:" in node.log_path.read_text(), 10)
        logged_key = re.search(r"Public Key: ([0-9A-F]{64})", node.log_path.read_text())
        assert logged_key is not None
        logged = logged_key.group(1)
        assert bytes.fromhex(logged) == node.public_key
    finally:
        node.stop()


def test_lab_dht_nodes_join_the_first(root):
    """Each further node reads the first as its bootstrap node and connects to it: one network."""
    with LabDHT(root, size=3) as dht:
        assert len({n.public_key for n in dht.nodes}) == 3
        assert "No bootstrap nodes found" in dht.first.log_path.read_text()
        logs = [node.log_path for node in dht.nodes[1:]]
        assert wait_until(
            lambda: all("Connected to another bootstrap node" in p.read_text() for p in logs), 30
        )
    assert all(n.pid is None for n in dht.nodes)
