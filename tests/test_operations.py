"""Operating a household: `toxbridge status` in good and bad times, systemd's readiness protocol,
and a stop that neither loses mail nor hangs.

A pair of its own (sam, tom) that know each other as contacts: these tests stop bridges and
Dovecot, which the shared households must not see.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid

import pytest
from toxpeer import PlainClient

from toxbridge.lab.household import Household
from toxbridge.lab.ports import wait_until

pytestmark = pytest.mark.integration

CONNECT = 90.0
STOP_TIMEOUT = 3


@pytest.fixture(scope="module")
def pair(lab_root, bootstrap_node):
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    sam = Household(
        lab_root,
        "sam",
        {"sam": "sam-pw"},
        boot,
        bridge_settings={"stop_timeout": STOP_TIMEOUT, "result_timeout": 60},
    )
    tom = Household(lab_root, "tom", {"tom": "tom-pw"}, boot)
    homes = [sam, tom]
    try:
        for home in homes:
            home.start()
        sam.contacts("add", "Tom", tom.tox_ids["tom"], "tom@tom.test")
        tom.contacts("add", "Sam", sam.tox_ids["sam"], "sam@sam.test")
        sam.wait_log(f"sam: friend {key(tom, 'tom')[:8]} is a bridge", CONNECT)
        tom.wait_log(f"tom: friend {key(sam, 'sam')[:8]} is a bridge", CONNECT)
        yield sam, tom
    finally:
        for home in homes:
            home.stop()


def key(home, user: str) -> str:
    return home.tox_ids[user][:64].lower()


def status(home) -> tuple[int, list[str], dict]:
    text = home.toxbridge("status")
    as_json = home.toxbridge("status", "--json")
    assert as_json.returncode == text.returncode, (text.stdout, as_json.stdout)
    return text.returncode, text.stdout.splitlines(), json.loads(as_json.stdout)


def line(lines: list[str], level: str, name: str) -> str:
    found = [entry for entry in lines if entry.split()[:2] == [level, name]]
    assert found, f"no `{level} {name}` line in:\n" + "\n".join(lines)
    return found[0]


def mail(source, sender: str, rcpt: str, subject: str) -> str:
    mid = f"<{uuid.uuid4()}@test>"
    source.postfix.send(
        sender,
        [rcpt],
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n\r\nHello.\r\n".encode(),
    )
    return mid


def in_inbox(home, user: str, mid: str) -> bool:
    return any(mid.encode() in m for m in home.dovecot.fetch_inbox(user))


def test_status_of_a_healthy_household(pair, report):
    sam, tom = pair
    rc, lines, result = status(sam)
    report("`toxbridge status`, all well:\n" + "\n".join(lines))
    assert rc == 0, "\n".join(lines)
    assert result["status"] == "ok" and all(c["level"] == "ok" for c in result["checks"])
    assert "toxbridge runs (pid" in line(lines, "ok", "daemon")
    assert "sam@sam.test is on the Tox network via" in line(lines, "ok", "tox")
    assert f"Tom ({key(tom, 'tom')[:8]}) online via" in line(lines, "ok", "friend")
    assert "toxbridge routes answers Postfix" in line(lines, "ok", "routes")
    for name in ("lmtp", "socketmap", "milter", "dovecot", "queue", "disk", "profile"):
        line(lines, "ok", name)
    assert "mail to non-contacts: notify" in line(lines, "ok", "ordinary")


def test_status_with_a_friend_offline_and_mail_waiting(pair, report):
    sam, tom = pair
    mark = sam.log_mark()
    tom.stop_bridge()
    sam.wait_log(f"sam: friend {key(tom, 'tom')[:8]} went offline", CONNECT, since=mark)
    mid = mail(sam, "sam@sam.test", "tom@tom.test", "while tom is away")
    assert wait_until(
        lambda: any(e["queue_name"] == "deferred" for e in sam.postfix.queue()), 30, interval=0.2
    )
    rc, lines, result = status(sam)
    report("`toxbridge status`, tom's bridge stopped:\n" + "\n".join(lines))
    assert rc == 1 and result["status"] == "warn", "\n".join(lines)
    assert f"Tom ({key(tom, 'tom')[:8]}) offline since" in line(lines, "warn", "friend")
    waiting = line(lines, "warn", "queue")
    assert "1 mail(s) for Tox recipients wait" in waiting and "offline since" in waiting
    assert "-> their bridge is off" in "\n".join(lines)
    tom.start_bridge()
    assert wait_until(lambda: in_inbox(tom, "tom", mid), CONNECT, interval=0.5)


def test_status_with_dovecot_stopped(pair):
    sam, _ = pair
    sam.dovecot.stop()
    try:
        rc, lines, _ = status(sam)
        assert rc == 2, "\n".join(lines)
        assert f"Dovecot's LMTP on 127.0.0.1:{sam.dovecot.lmtp_port} does not answer" in line(
            lines, "error", "dovecot"
        )
        assert "-> start Dovecot" in "\n".join(lines)
        line(lines, "ok", "daemon")
    finally:
        sam.dovecot.start()


def test_status_with_the_daemon_down(pair):
    sam, _ = pair
    sam.stop_bridge()
    try:
        rc, lines, _ = status(sam)
        assert rc == 2, "\n".join(lines)
        daemon = line(lines, "error", "daemon")
        assert "toxbridge is not running" in daemon and "ordinary mail still leaves" in daemon
        assert "nothing answers" in line(lines, "error", "lmtp")
        # `routes` still answers Postfix: ordinary mail does not wait on the Tox bridge.
        for name in ("routes", "socketmap", "milter", "ordinary", "dovecot", "disk", "profile"):
            line(lines, "ok", name)
        assert not any(entry.split()[1:2] == ["friend"] for entry in lines)
    finally:
        sam.start_bridge()


def test_status_with_routes_down_and_its_ready_for_systemd(pair, lab_root):
    sam, _ = pair
    sam.stop_routes()
    notify = NotifySocket(lab_root / "notify-routes.sock")
    try:
        rc, lines, _ = status(sam)
        assert rc == 2, "\n".join(lines)
        routes = line(lines, "error", "routes")
        assert "toxbridge routes is not running" in routes and "451 4.3.0" in routes
        text = "\n".join(lines)
        assert "-> start it (systemctl start toxbridge-routes)" in text
        assert "nothing answers" in line(lines, "error", "socketmap")
        line(lines, "error", "milter")
        assert text.count("-> start toxbridge-routes") == 2  # the socketmap's and the milter's
        for name in ("daemon", "lmtp", "dovecot"):
            line(lines, "ok", name)
        sam.start_routes(env={"NOTIFY_SOCKET": notify.path})
        assert wait_until(lambda: "READY=1" in notify.messages, 30, interval=0.1)
        sam.stop_routes()
        assert wait_until(lambda: "STOPPING=1" in notify.messages, 5, interval=0.05)
    finally:
        notify.close()
        sam.start_routes()


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket that collects what the service says."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def test_ready_status_and_a_bounded_stop_with_mail_on_its_way(pair, bootstrap_node, lab_root, report):
    """A friend that takes the mail and never answers holds it on its way; SIGTERM must still stop
    the bridge within stop_timeout, with the mail deferred by Postfix (4xx), not lost."""
    sam, _ = pair
    client = PlainClient(bootstrap_node, greet=True)  # a bridge that never answers
    notify = NotifySocket(lab_root / "notify.sock")
    try:
        sam.stop_bridge()
        sam.start_bridge(env={"NOTIFY_SOCKET": notify.path})
        assert wait_until(lambda: "READY=1" in notify.messages, 30, interval=0.1)
        assert wait_until(lambda: any(m.startswith("STATUS=") for m in notify.messages), 30, interval=0.1)
        sam.contacts("add", "Mute", client.node.address.hex(), "mute@example.org")
        sam.wait_log(f"sam: friend {client.node.public_key.hex()[:8]} online", CONNECT)
        mail(sam, "sam@sam.test", "mute@example.org", "never answered")
        assert wait_until(lambda: client.complete, 30, interval=0.1)  # the bytes are there, no answer comes

        started = time.monotonic()
        sam.stop_bridge(signal.SIGTERM)
        took = time.monotonic() - started
        assert took < STOP_TIMEOUT + 5, took
        assert "STOPPING=1" in notify.messages
        assert sam.log_has("stopped 1 mail\\(s\\) on their way")
        assert wait_until(
            lambda: "toxbridge is stopping" in sam.postfix.maillog.read_text(), 10, interval=0.1
        )
        report(
            f"SIGTERM with a mail on its way: bridge gone after {took:.1f} s (stop_timeout {STOP_TIMEOUT} s), "
            "the mail deferred by Postfix; systemd heard READY=1, STATUS=, STOPPING=1"
        )

        sam.start_bridge()  # pushes the deferred mail to the silent friend again
        assert wait_until(lambda: len(client.complete) >= 2, CONNECT, interval=0.1)
        mark = sam.log_mark()
        started = time.monotonic()
        os.kill(sam.bridge_pid, signal.SIGTERM)
        sam.wait_log("SIGTERM: stopping", 5, since=mark)  # two signals at once would arrive as one
        os.kill(sam.bridge_pid, signal.SIGTERM)
        sam.stop_bridge()
        took = time.monotonic() - started
        assert took < STOP_TIMEOUT, took
        assert sam.log_has("SIGTERM again: exiting now")
        report(f"two SIGTERMs: gone after {took:.2f} s")
    finally:
        notify.close()
        client.close()
        if sam.bridge_pid is None:
            sam.start_bridge()
