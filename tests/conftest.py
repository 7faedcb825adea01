"""Shared fixtures: one local Tox network with three households, started once per session.

A friend connection takes about 10 s (FACTS.md), so the households and their friendships are
session-scoped; tests that stop a bridge restore it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from toxbridge.contacts.roster import Roster
from toxbridge.lab.bootstrapd import LabDHT
from toxbridge.lab.household import Household, befriend_all


@pytest.fixture
def report(request):
    """Print a measured figure in the test run's output, even when output is captured."""
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled():
            terminal.write_line(f"\n{request.node.name}: {line}")

    return write


@pytest.fixture
def roster():
    """Learned pairings and pending requests in memory, for the unit tests of contacts and friends."""
    r = Roster(":memory:")
    yield r
    r.close()


@pytest.fixture(scope="session")
def lab_root():
    # Not pytest's tmp_path: its 0700 parents lock out Postfix's and Dovecot's own users.
    root = Path(tempfile.mkdtemp(prefix="toxbridge-test-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    if not os.environ.get("TOXBRIDGE_KEEP_LAB"):  # keep logs for a post-mortem
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def bootstrap_node(lab_root):
    """The first node of the session's private Tox network (LabDHT: enough nodes that stay)."""
    with LabDHT(lab_root / "bootstrapd") as dht:
        yield dht.first


@pytest.fixture(scope="session")
def network(lab_root, bootstrap_node):
    """alice (alice, alan), bob (bob; ghost has a Tox identity but no Dovecot mailbox), carol
    (forged_sender: flag; LMTP and socketmap on TCP ports).

    alice's identity is a friend of bob, ghost and carol, made through the real friend-request
    path: the first mail is deferred (4.4.1), the peer accepts, Postfix delivers on flush.
    """
    boot = [(bootstrap_node.host, bootstrap_node.port, bootstrap_node.public_key)]
    # alice waits only briefly for a peer that never answers (a plain Tox client, test_plain_peer).
    alice = Household(
        lab_root,
        "alice",
        {"alice": "alice-pw", "alan": "alan-pw"},
        boot,
        bridge_users=["alice"],
        bridge_settings={"result_timeout": 5, "transfer_stall_timeout": 10},
    )
    bob = Household(lab_root, "bob", {"bob": "bob-pw"}, boot, bridge_users=["bob", "ghost"])
    # carol's household delivers mail with a forged sender, flagged, instead of rejecting it, and
    # its bridge listens for Postfix on loopback ports, the option beside the unix sockets.
    carol = Household(
        lab_root,
        "carol",
        {"carol": "carol-pw"},
        boot,
        bridge_settings={"forged_sender": "flag"},
        tcp_listeners=True,
    )
    homes = [alice, bob, carol]
    try:
        for home in homes:
            home.start()
        befriend_all(alice, "alice", [(bob, "bob"), (bob, "ghost"), (carol, "carol")])
        yield {"alice": alice, "bob": bob, "carol": carol}
    finally:
        for home in homes:
            home.stop()
