"""Tox without UDP: TCP-only through the household's own tox-bootstrapd as TCP relay, and the
same through a SOCKS5 proxy (the way Tor's SocksPort is used).

Two pairs of households of their own: rita and rolf run with `tox.udp: false` and the lab's
tox-bootstrapd in both `bootstrap` and `tcp_relays`; sofia and sven do the same through a
SOCKS5 proxy each (tests/socks5.py). Each test shows that a mail crosses Postfix → bridge →
Tox → bridge → Dovecot, and that it went the way it should: the bridges hold no UDP socket,
toxcore reports its connections as TCP, the relay (or the proxy) holds the bridges' connections.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import time
import uuid

import pytest
from socks5 import Socks5Proxy

from toxbridge.lab.household import Household, befriend_all
from toxbridge.lab.ports import wait_until

pytestmark = pytest.mark.integration

TIMEOUT = float(os.environ.get("TOXBRIDGE_RECONNECT", 120))


def tcp_only(bootstrap_node) -> dict:
    """The tox settings of a household behind a firewall that lets only TCP out."""
    relay = {
        "host": bootstrap_node.host,
        "port": bootstrap_node.tcp_port,
        "public_key": bootstrap_node.public_key.hex(),
    }
    return {"udp": False, "tcp_relays": [relay]}


def start_pair(homes: list[Household]) -> None:
    first, second = homes
    for home in homes:
        home.start()
    user_a, user_b = first.name, second.name
    befriend_all(first, user_a, [(second, user_b)], timeout=TIMEOUT)
    # The mail that carried the friend request comes through once the friends are online.
    second.wait_inbox(user_b, 1, TIMEOUT)


@pytest.fixture(scope="module")
def relay_pair(lab_root, bootstrap_node):
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    homes = [
        Household(lab_root, name, {name: f"{name}-pw"}, boot, tox_settings=tcp_only(bootstrap_node))
        for name in ("rita", "rolf")
    ]
    try:
        start_pair(homes)
        yield homes
    finally:
        for home in homes:
            home.stop()


@pytest.fixture(scope="module")
def socks_pair(lab_root, bootstrap_node):
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    proxies, homes = {}, []
    try:
        for name in ("sofia", "sven"):
            proxies[name] = Socks5Proxy().start()
            socks = {"type": "socks5", "host": "127.0.0.1", "port": proxies[name].port}
            homes.append(
                Household(
                    lab_root,
                    name,
                    {name: f"{name}-pw"},
                    boot,
                    tox_settings={**tcp_only(bootstrap_node), "proxy": socks},
                )
            )
        start_pair(homes)
        yield homes, proxies
    finally:
        for home in homes:
            home.stop()
        for proxy in proxies.values():
            proxy.close()


# ---- helpers


def compose(sender: str, subject: str, body_size: int = 0) -> tuple[str, bytes]:
    mid = f"<{uuid.uuid4()}@{sender.partition('@')[2]}>"
    body = os.urandom(body_size // 2).hex().encode()
    lines = b"\r\n".join(body[i : i + 76] for i in range(0, len(body), 76))
    head = f"From: {sender}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n\r\n".encode()
    return mid, head + lines + b"\r\nend\r\n"


def send_and_wait(a: Household, b: Household, body_size: int = 0) -> tuple[str, float]:
    """A mail from a's user to b's user's Tox address; seconds until it is in b's IMAP INBOX."""
    mid, message = compose(a.address(a.name), f"over TCP {uuid.uuid4().hex[:6]}", body_size)
    t0 = time.monotonic()
    a.postfix.send(a.address(a.name), [b.tox_address(b.name)], message)
    arrived = wait_until(lambda: any(mid.encode() in m for m in b.dovecot.fetch_inbox(b.name)), TIMEOUT, 0.05)
    assert arrived, f"{mid} not in {b.name}'s INBOX after {TIMEOUT}s"
    return mid, time.monotonic() - t0


def sockets(pid: int, kind: str) -> list[tuple[str, str, str]]:
    """(state, local, peer) of every `kind` ("tcp" or "udp") socket the process holds."""
    out = subprocess.run(["ss", "-Hanp", f"--{kind}"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        if f"pid={pid}," in line:
            state, _rq, _sq, local, peer = line.split()[:5]
            found.append((state, local, peer))
    return found


def connected_to(pid: int, port: int) -> int:
    """How many established TCP connections the process holds to 127.0.0.1:port."""
    return sum(
        1 for state, _, peer in sockets(pid, "tcp") if state == "ESTAB" and peer == f"127.0.0.1:{port}"
    )


def log_time(home: Household, pattern: str, since: int = 0) -> float:
    """Wall-clock time of the first log line after `since` that contains `pattern`."""
    with open(home.bridge_log, "rb") as log:
        log.seek(since)
        for line in log.read().decode("utf-8", "replace").splitlines():
            if pattern in line:
                return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise AssertionError(f"no {pattern!r} in {home.bridge_log}")


def assert_tcp_only(home: Household, peer: Household) -> None:
    """toxcore says TCP for the network and the friend, never UDP, and the bridge holds no UDP socket."""
    peer_key = peer.tox_ids[peer.name][:8].lower()
    assert home.log_has(f"{home.name}: friend {peer_key} online \\(TCP\\)"), home.name
    # Measured: toxcore may report the friend connection (and carry mail) a second or two before
    # it reports its own connection to the network.
    home.wait_log(f"{home.name}: Tox network online \\(TCP\\)", TIMEOUT)
    assert not home.log_has(r"online \(UDP\)"), f"{home.name} used UDP"
    pid = home.bridge_pid
    assert pid is not None, f"{home.name}'s bridge is not running"
    assert sockets(pid, "udp") == [], f"{home.name}'s bridge holds a UDP socket"


# ---- TCP-only through the local relay


def test_tcp_only_through_a_local_relay_delivers_a_mail(relay_pair, bootstrap_node, report):
    rita, rolf = relay_pair
    for home, peer in ((rita, rolf), (rolf, rita)):
        assert_tcp_only(home, peer)
        assert connected_to(home.bridge_pid, bootstrap_node.tcp_port) >= 1, f"{home.name} not on the relay"
    mark = rita.log_mark()
    mid, latency = send_and_wait(rita, rolf)
    rita.wait_log(f"to=<{rolf.tox_address('rolf')}>.*status=sent", 30, since=mark)
    report(f"TCP relay: mail in rolf's IMAP {latency:.2f} s after rita's Postfix took it")
    rita.postfix.wait_queue_empty(30)
    assert not rita.log_has(r"online \(UDP\)") and not rolf.log_has(r"online \(UDP\)")


def test_friend_connection_over_the_relay_after_a_restart(relay_pair, report):
    rita, rolf = relay_pair
    rolf_key = rolf.tox_ids["rolf"][:8].lower()
    mark = rita.log_mark()
    rolf.stop_bridge(signal.SIGTERM)
    rita.wait_log(f"friend {rolf_key} went offline", TIMEOUT, since=mark)
    rolf_mark = rolf.log_mark()
    started = time.time()
    rolf.start_bridge()
    rita.wait_log(f"rita: friend {rolf_key} online \\(TCP\\)", TIMEOUT, since=mark)
    rolf.wait_log("rolf: Tox network online \\(TCP\\)", TIMEOUT, since=rolf_mark)
    network = log_time(rolf, "rolf: Tox network online (TCP)", rolf_mark) - started
    friend = log_time(rita, f"rita: friend {rolf_key} online (TCP)", mark) - started
    report(
        f"TCP relay: rolf's bridge on the network {network:.1f} s after its start, "
        f"rita's friend connection to it {friend:.1f} s after"
    )
    assert_tcp_only(rolf, rita)
    _, latency = send_and_wait(rita, rolf)
    report(f"TCP relay: first mail after the restart in {latency:.2f} s")


# ---- the same through a SOCKS5 proxy


def test_socks5_proxy_carries_the_mail(socks_pair, bootstrap_node, report):
    (sofia, sven), proxies = socks_pair
    relay = f"{bootstrap_node.host}:{bootstrap_node.tcp_port}"
    for home, peer in ((sofia, sven), (sven, sofia)):
        assert_tcp_only(home, peer)
        proxy = proxies[home.name]
        # toxcore went to the relay only through the proxy, which connected to nothing else.
        assert connected_to(home.bridge_pid, proxy.port) >= 1, f"{home.name} holds no connection to its proxy"
        assert connected_to(home.bridge_pid, bootstrap_node.tcp_port) == 0, f"{home.name} bypassed its proxy"
        assert set(proxy.targets) == {relay} and proxy.refused == [], (proxy.targets, proxy.refused)
    size = 200_000
    up, down = proxies["sofia"].bytes_up, proxies["sven"].bytes_down
    mark = sven.log_mark()
    _, latency = send_and_wait(sofia, sven, body_size=size)
    carried_up, carried_down = proxies["sofia"].bytes_up - up, proxies["sven"].bytes_down - down
    # What crossed Tox: the mail's payload, compressed where that shrinks it (sven's log says).
    sven.wait_log(r"size=\d+, wire=\d+", 10, since=mark)
    with open(sven.bridge_log, "rb") as log:
        log.seek(mark)
        wire = int(re.findall(rb"size=\d+, wire=(\d+)", log.read())[-1])
    report(
        f"SOCKS5: a {size // 1000} kB mail in sven's IMAP after {latency:.2f} s; sofia's proxy carried "
        f"{carried_up} bytes out, sven's {carried_down} bytes in for a payload of {wire} bytes (since the start: "
        f"{proxies['sofia'].connections} + {proxies['sven'].connections} connections, "
        f"{proxies['sofia'].bytes_total + proxies['sven'].bytes_total} bytes; "
        f"destinations named as {dict(proxies['sofia'].address_types)})"
    )
    # Encrypted and framed, the payload can only have grown on its way through both proxies.
    assert carried_up > wire and carried_down > wire
    sofia.postfix.wait_queue_empty(30)
