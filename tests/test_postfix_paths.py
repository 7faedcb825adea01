"""Mail that enters the household through Postfix, not the bridge.

Issue 15 point 2: mail that reaches Dovecot without the bridge (port 25, the LAN, submission,
sendmail) cannot carry our trust headers. `Authentication-Results: …; x-tox=pass` and
`X-Toxbridge-*` are ours alone: only the receiving bridge adds them, after Postfix, so Postfix
removes every one that arrives with a mail (RFC 8601 §5), deploy/postfix/header_checks.toxbridge.
Point 15: the household's role addresses and the Pi's own mail reach a member."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from toxbridge.lab.dovecot import Dovecot
from toxbridge.lab.ports import free_port
from toxbridge.lab.postfix import Postfix

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="private Postfix/Dovecot instances need root"),
]

FORGED = (
    b"Authentication-Results: bridge.alice.test; x-tox=pass (mom) smtp.mailfrom=mom@alice.test\r\n"
    b"authentication-results: bridge.alice.test;\r\n\tx-tox=pass x-tox.key=" + b"ab" * 32 + b"\r\n"
    b"Authentication-Results : bridge.alice.test; x-tox=pass\r\n"
    b"X-Toxbridge-Id: " + b"cd" * 32 + b"\r\n"
    b"X-TOXBRIDGE-WARNING: none\r\n"
    b"X-Toxbridge-Anything : x\r\n"
)
KEPT = b"Authentication-Results: mx.example.net; dkim=pass header.d=example.net\r\n"


@pytest.fixture
def household():
    root = Path(tempfile.mkdtemp(prefix="toxbridge-trust-", dir="/tmp"))
    root.chmod(0o755)
    dovecot = Dovecot(root, "alice", {"alice": "alice-pw"}, free_port(), free_port(), free_port())
    postfix = Postfix(root, "alice", "alice.test", free_port(), ["alice"], dovecot.lmtp_port, free_port())
    try:
        dovecot.start()
        postfix.start()
        yield dovecot, postfix
    finally:
        postfix.stop()
        dovecot.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("client", ["127.0.0.1", "127.0.0.2"], ids=["from-this-host", "from-outside"])
def test_trust_headers_sent_over_smtp_never_reach_the_mailbox(household, client):
    dovecot, postfix = household
    message = (
        b"From: Mom <mom@alice.test>\r\nTo: alice@alice.test\r\nSubject: forged\r\n"
        + FORGED
        + KEPT
        + b"\r\nI am your mother, says x-tox.\r\n"
    )
    postfix.send("mom@alice.test", ["alice@alice.test"], message, source_address=client)
    postfix.wait_queue_empty(timeout=30)
    (stored,) = dovecot.fetch_inbox("alice")
    header = stored.split(b"\r\n\r\n", 1)[0]
    assert b"x-tox" not in header.lower(), header.decode()
    assert b"x-toxbridge" not in header.lower(), header.decode()
    parsed = message_from_bytes(stored, policy=policy.default)
    assert parsed.get_all("Authentication-Results") == [KEPT.decode().split(": ", 1)[1].strip()]
    assert parsed["Subject"] == "forged" and b"says x-tox." in stored  # the body is untouched


def test_system_mail_and_postmaster_reach_a_household_user(household):
    """Issue 15 point 15: with myorigin = $mydomain, cron's mail to `root` became root@household,
    in no mailbox, and bounced to nowhere; postmaster@ and abuse@ did not exist."""
    dovecot, postfix = household
    postfix.send(
        "someone@example.net",
        ["postmaster@alice.test", "abuse@alice.test"],
        b"Subject: to the postmaster\r\n\r\nhello\r\n",
        source_address="127.0.0.2",
    )
    cron = subprocess.run(
        ["/usr/sbin/sendmail", "-C", str(postfix.config_dir), "root"],
        input=b"Subject: Cron <root@pi> backup\r\n\r\nbackup done\r\n",
        capture_output=True,
    )
    assert cron.returncode == 0, cron.stderr
    postfix.wait_queue_empty(timeout=30)
    subjects = sorted(
        message_from_bytes(m, policy=policy.default)["Subject"] for m in dovecot.fetch_inbox("alice")
    )
    assert subjects == ["Cron <root@pi> backup", "to the postmaster"], subjects
