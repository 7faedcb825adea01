"""Never lose a mail, never deliver one twice: offline peers, catch-up, kills, lost answers.

Two households of their own (ann sends, ben receives) so that killing bridges here does not
disturb the other tests. ann's Postfix backs off for half an hour, so any mail that arrives
within the test was pushed by the bridge's catch-up, not by Postfix's own retry.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import os
import random
import re
import signal
import socket
import threading
import time
import uuid
from collections import Counter

import pytest

from toxbridge.lab.household import Household, befriend_all
from toxbridge.lab.ports import wait_until

pytestmark = pytest.mark.integration

RECONNECT = float(
    os.environ.get("TOXBRIDGE_RECONNECT", 120)
)  # a restarted bridge reconnects in 9-30 s, or much later after a kill -9 (see note)
SLOW_POSTFIX = {"minimal_backoff_time": "1800s", "maximal_backoff_time": "3600s", "queue_run_delay": "1800s"}


class GatedProxy:
    """A TCP forwarder in front of ben's Dovecot LMTP that can hold new connections back."""

    def __init__(self) -> None:
        self.upstream = 0
        self.gate = threading.Event()
        self.gate.set()
        self.held = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self.held += 1
        self.gate.wait()
        self.held -= 1
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def pair(lab_root, bootstrap_node):
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    proxy = GatedProxy()
    ann = Household(
        lab_root,
        "ann",
        {"ann": "ann-pw"},
        boot,
        postfix_extra=SLOW_POSTFIX,
        bridge_settings={"result_timeout": 20, "transfer_stall_timeout": 10},
    )
    ben = Household(
        lab_root, "ben", {"ben": "ben-pw"}, boot, bridge_settings={"dovecot_lmtp": f"127.0.0.1:{proxy.port}"}
    )
    proxy.upstream = ben.dovecot.lmtp_port
    try:
        ann.start()
        ben.start()
        befriend_all(ann, "ann", [(ben, "ben")], timeout=RECONNECT)
        # No flush: the mail that carried the friend request comes through by catch-up alone.
        wait_arrivals(ben, {message_id_of_subject(ann)}, RECONNECT, by_subject=True)
        yield ann, ben, proxy
    finally:
        for home in (ann, ben):
            home.stop()
        proxy.close()


def message_id_of_subject(_ann) -> str:
    return "friend request"


def compose(i: int | str) -> tuple[str, bytes]:
    mid = f"<{uuid.uuid4()}@ann.test>"
    return mid, f"From: ann@ann.test\r\nSubject: mail {i}\r\nMessage-ID: {mid}\r\n\r\nbody {i}\r\n".encode()


def ids_in(home: Household, user: str) -> Counter:
    ids: Counter[str] = Counter()
    for raw in home.dovecot.fetch_inbox(user):
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        ids[msg["Message-ID"] or ""] += 1
        ids["subject:" + (msg["Subject"] or "")] += 1
    return ids


def wait_arrivals(home: Household, wanted: set[str], timeout: float, by_subject: bool = False) -> Counter:
    keys = {("subject:" + w) if by_subject else w for w in wanted}
    seen: Counter[str] = Counter()

    def arrived() -> bool:
        nonlocal seen
        seen = ids_in(home, "ben")
        return keys <= set(seen)

    assert wait_until(arrived, timeout, interval=0.2), f"missing: {keys - set(seen)}"
    return seen


def log_time(home: Household, pattern: str, since: int) -> float:
    """Wall-clock time of the first log line after `since` that contains `pattern`."""
    with open(home.bridge_log, "rb") as log:
        log.seek(since)
        for line in log.read().decode("utf-8", "replace").splitlines():
            if pattern in line:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
    raise AssertionError(f"no {pattern!r} in {home.bridge_log}")


def deferred(home: Household) -> list[dict]:
    return [q for q in home.postfix.queue() if q.get("queue_name") == "deferred"]


def restart(home: Household, sig: int = signal.SIGTERM) -> None:
    home.stop_bridge(sig)
    home.start_bridge()


def test_deferred_mail_is_pushed_when_the_friend_comes_back(pair, report):
    ann, ben, _ = pair
    ben_key = ben.tox_ids["ben"][:8].lower()
    mark = ann.log_mark()
    ben.stop_bridge()
    ann.wait_log(f"friend {ben_key} went offline", RECONNECT, since=mark)
    mails = dict(compose(f"while away {i}") for i in range(3))
    for _mid, msg in mails.items():
        ann.postfix.send(ann.address("ann"), [ben.tox_address("ben")], msg)
    assert wait_until(lambda: len(deferred(ann)) >= 3, 60), ann.postfix.queue()
    reasons = [r["delay_reason"] for q in deferred(ann) for r in q["recipients"]]
    assert all(f"Tox friend {ben_key} offline since " in r for r in reasons), reasons
    mark = ann.log_mark()
    ben.start_bridge()
    ann.wait_log(f"ann: friend {ben_key} online", RECONNECT, since=mark)
    online_at = log_time(ann, f"ann: friend {ben_key} online", mark)
    wait_arrivals(ben, set(mails), 60)
    catch_up = time.time() - online_at
    report(f"catch-up: 3 deferred mails in ben's IMAP {catch_up:.2f} s after the friend connection came up")
    assert catch_up < 30, "Postfix alone would wait 1800 s; the push must be far quicker"
    ann.postfix.wait_queue_empty(30)


def test_unreachable_friend_ends_in_a_bounce_that_says_why(pair):
    """With the queue lifetime at zero, Postfix bounces at the first deferral: the DSN carries
    the bridge's words (which friend, offline since when)."""
    ann, ben, _ = pair
    ben_key = ben.tox_ids["ben"][:8].lower()
    mark = ann.log_mark()
    ben.stop_bridge()
    ann.wait_log(f"friend {ben_key} went offline", RECONNECT, since=mark)
    ann.postfix.postconf({"maximal_queue_lifetime": "0", "bounce_queue_lifetime": "0"})
    try:
        _, msg = compose("never reaches ben")
        ann.postfix.send(ann.address("ann"), [ben.tox_address("ben")], msg)
        assert wait_until(
            lambda: [m for m in ann.dovecot.fetch_inbox("ann") if b"never reaches ben" in m], 60
        )
        (bounce,) = [m for m in ann.dovecot.fetch_inbox("ann") if b"never reaches ben" in m]
        assert f"Tox friend {ben_key} offline since".encode() in re.sub(rb"\s+", b" ", bounce)
    finally:
        ann.postfix.postconf({"maximal_queue_lifetime": "7d", "bounce_queue_lifetime": "7d"})
        mark = ann.log_mark()
        ben.start_bridge()
        ann.wait_log(f"ann: friend {ben_key} is a bridge", RECONNECT, since=mark)


def test_lost_answer_does_not_deliver_twice(pair):
    """ann's bridge dies after ben's Dovecot took the mail but before ann could tell Postfix."""
    ann, ben, proxy = pair
    mid, msg = compose("lost answer")
    proxy.gate.clear()
    try:
        ann.postfix.send(ann.address("ann"), [ben.tox_address("ben")], msg)
        assert wait_until(lambda: proxy.held > 0, 60), "ben never started delivering"
        ann.stop_bridge(signal.SIGKILL)  # the transfer is complete; ben is about to deliver
    finally:
        proxy.gate.set()
    wait_arrivals(ben, {mid}, 60)
    assert wait_until(lambda: bool(deferred(ann)), 60), "Postfix should have kept the mail"
    mark = ben.log_mark()
    ann.start_bridge()
    ben.wait_log("repeat of a mail delivered before; answered from the record", RECONNECT, since=mark)
    ann.postfix.wait_queue_empty(60)
    assert ids_in(ben, "ben")[mid] == 1


def test_broken_large_transfer_resumes(pair, report):
    ann, ben = pair[0], pair[1]
    mid, head = compose("large")
    body = os.urandom(12 * 1024 * 1024).hex().encode()  # 24 MB of text: a few seconds on the wire
    msg = head + b"\r\n".join(body[i : i + 76] for i in range(0, len(body), 76)) + b"\r\n"
    partial_dir = ben.root / "state" / "partial" / "ben"
    ann.postfix.send(ann.address("ann"), [ben.tox_address("ben")], msg)

    def partial_size() -> int:
        return max((p.stat().st_size for p in partial_dir.glob("*")), default=0)

    assert wait_until(lambda: partial_size() > 2 * 1024 * 1024, 120), "transfer did not start"
    ben.stop_bridge(signal.SIGKILL)
    kept = partial_size()
    mark = ben.log_mark()
    ben.start_bridge()
    ben.wait_log("resuming a broken transfer at byte", RECONNECT + 60, since=mark)
    wait_arrivals(ben, {mid}, 120)
    assert ids_in(ben, "ben")[mid] == 1
    got = [m for m in ben.dovecot.fetch_inbox("ben") if mid.encode() in m][0]
    assert got.replace(b"\r\n", b"\n").endswith(msg.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))
    report(f"resume: {kept} bytes were on disk when ben was killed; the retry continued from there")
    ann.postfix.wait_queue_empty(60)


def test_chaos_every_mail_exactly_once(pair, report):
    ann, ben, _ = pair
    rng = random.Random(int(os.environ.get("CHAOS_SEED", time.time())))
    count, kills = 200, 4
    mails = dict(compose(f"chaos {i}") for i in range(count))
    done = threading.Event()

    def send_all() -> None:
        for _mid, msg in mails.items():
            ann.postfix.send(ann.address("ann"), [ben.tox_address("ben")], msg)
            time.sleep(rng.uniform(0, 0.1))  # pacing the sender, not waiting for a condition
        done.set()

    sender = threading.Thread(target=send_all)
    sender.start()
    killed = []
    for _ in range(kills):
        victim = rng.choice([ann, ben])
        time.sleep(rng.uniform(0.5, 4))  # a random moment to strike, by design
        restart(victim, signal.SIGKILL)
        killed.append(victim.name)
    sender.join()
    wanted = set(mails)
    on_time = wait_until(lambda: wanted <= set(ids_in(ben, "ben")), RECONNECT * 2, interval=1)
    missing_before_flush = len(wanted - set(ids_in(ben, "ben")))
    if not on_time:
        ann.postfix.flush()  # mail deferred while the friend never looked offline waits for backoff
    seen = wait_arrivals(ben, wanted, RECONNECT)
    ann.postfix.wait_queue_empty(RECONNECT)
    duplicated = sum(1 for mid in wanted if seen[mid] > 1)
    lost = sum(1 for mid in wanted if seen[mid] == 0)
    report(
        f"chaos: {count} mails, {len(killed)} SIGKILLs ({', '.join(killed)}), lost {lost}, "
        f"duplicated {duplicated}, waiting for Postfix's backoff {missing_before_flush}"
    )
    assert (lost, duplicated) == (0, 0)
