"""Who may talk to the bridge's listeners for Postfix (issue 15, point 8).

The bridge checks only that an LMTP envelope sender is a household user, so whoever reaches its
LMTP listener sends Tox mail in that user's name. The attack: a process of another user on the
Pi (here `nobody`) connects to a bridge listening on a loopback TCP port (carol's household) and
sends as carol; the mail reaches alice over Tox, authenticated as carol. By default the listeners
are unix sockets (mode 0660, group postfix): the same process cannot connect to alice's, nor ask
her socketmap who her contacts are, while Postfix still delivers through them (the rest of the
suite does).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid

import pytest

from toxbridge.lab.ports import wait_until

pytestmark = pytest.mark.integration

ARRIVAL = 60.0

# What the other local process runs: an LMTP dialogue sending one mail, printed as JSON.
# (No toxbridge import: it runs as nobody, who may not read the checkout's virtualenv.)
LMTP_CLIENT = r"""
import json, socket, sys
target, sender, rcpt, message = sys.argv[1:5]
try:
    if target.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(target)
    else:
        sock = socket.create_connection(("127.0.0.1", int(target)), timeout=30)
except OSError as e:
    print(json.dumps({"error": e.strerror}))
    sys.exit(0)
reader = sock.makefile("rb")
def reply():
    lines = [reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(reader.readline())
    return lines[-1][:3].decode()
codes = [reply()]
for command in (b"LHLO evil.local", f"MAIL FROM:<{sender}>".encode(), f"RCPT TO:<{rcpt}>".encode(), b"DATA"):
    sock.sendall(command + b"\r\n")
    codes.append(reply())
sock.sendall(message.encode() + b"\r\n.\r\n")
codes.append(reply())
print(json.dumps({"codes": codes}))
"""


def as_nobody(*args: str) -> dict:
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            "/usr/bin/python3",
            "-c",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def forged_mail(sender: str, rcpt: str, token: str) -> str:
    return f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {token}\r\nMessage-ID: <{token}@evil.local>\r\n\r\nsend money\r\n"


def test_a_local_process_sends_as_a_user_through_a_tcp_listener(network):
    """The attack, where it still works: the loopback TCP option (carol's bridge)."""
    carol, alice = network["carol"], network["alice"]
    token = f"tcp-{uuid.uuid4().hex[:12]}"
    rcpt = alice.tox_address("alice")
    sender = carol.address("carol")
    got = as_nobody(LMTP_CLIENT, str(carol.bridge_port), sender, rcpt, forged_mail(sender, rcpt, token))
    assert got == {"codes": ["220", "250", "250", "250", "354", "250"]}
    assert wait_until(
        lambda: any(token.encode() in m for m in alice.dovecot.fetch_inbox("alice")), ARRIVAL
    ), "nobody's mail did not cross Tox"
    (mail,) = [m for m in alice.dovecot.fetch_inbox("alice") if token.encode() in m]
    assert b"x-tox=pass" in mail  # alice's bridge vouches that carol's identity sent it


def test_a_local_process_cannot_reach_the_default_unix_sockets(network):
    alice = network["alice"]
    lmtp, socketmap = alice.postfix.bridge_lmtp_socket, alice.postfix.socketmap_socket
    for path in (lmtp, socketmap):
        mode = os.stat(path)
        assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o660, oct(mode.st_mode)
    sender = alice.address("alice")
    rcpt = network["bob"].tox_address("bob")
    token = f"unix-{uuid.uuid4().hex[:12]}"
    assert as_nobody(LMTP_CLIENT, str(lmtp), sender, rcpt, forged_mail(sender, rcpt, token)) == {
        "error": "Permission denied"
    }
    assert as_nobody(LMTP_CLIENT, str(socketmap), sender, rcpt, "") == {"error": "Permission denied"}
    # Postfix's own user may: it is how mail reaches the bridge.
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=postfix",
            "--regid=postfix",
            "--init-groups",
            "--",
            "/usr/bin/python3",
            "-c",
            "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(s.recv(4))",
            str(lmtp),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and "220" in done.stdout, done.stderr
