"""When an offline friend is searched afresh (tox/friend_search.py), and the re-add that does it
(ToxNode.readd_friend) against real toxcore on a node that binds no port."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from toxbridge.tox.friend_search import FriendSearch
from toxbridge.tox.identity import Identity
from toxbridge.tox.last_seen import LastSeen, seen_path
from toxbridge.tox.node import ToxNode
from toxbridge.tox.options import ToxOptions

A, B = b"a" * 32, b"b" * 32


def public_key() -> bytes:
    """A key toxcore takes as a friend's: a curve25519 public key has the top bit of its last byte clear."""
    key = bytearray(os.urandom(32))
    key[31] &= 0x7F
    return bytes(key)


def test_a_lost_friend_is_due_every_period_until_the_window_closes():
    search = FriendSearch(refresh=5, window=20)
    search.lost(A, now=100)
    assert search.due(104.9) == []  # toxcore itself searches at once: the first re-add one period in
    assert search.due(105) == [A]
    assert search.due(109) == []
    assert search.due(110) == [A]
    assert search.due(120) == [A]
    assert search.due(120.5) == []
    assert search.due(125) == []  # past the window: toxcore's own backoff from here on
    assert search.searching() == set()


def test_a_friend_found_again_is_not_searched():
    search = FriendSearch(refresh=5, window=60)
    search.lost(A, now=0)
    search.found(A)
    assert search.due(10) == []


def test_joining_the_network_opens_a_window_for_every_offline_friend():
    search = FriendSearch(refresh=5, window=60)
    search.joined([A, B], now=0)
    assert sorted(search.due(5)) == [A, B]


def test_a_second_loss_extends_the_window_without_delaying_the_next_re_add():
    search = FriendSearch(refresh=5, window=10)
    search.lost(A, now=0)
    search.joined([A], now=4)  # our own restart while A was away
    assert search.due(5) == [A]
    assert search.due(14) == [A]  # window now ends at 14, not 10


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        FriendSearch(refresh=0)


@pytest.fixture
def node():
    node = ToxNode(ToxOptions(udp=False))  # no port: nothing leaves, nothing listens
    yield node
    node.close()


def test_a_re_added_friend_keeps_its_key_and_its_number(node):
    keys = [public_key() for _ in range(3)]
    numbers = [node.friend_add_norequest(k) for k in keys]
    assert node.readd_friend(numbers[1])
    assert node.friends() == numbers
    assert [node.friend_public_key(n) for n in numbers] == keys


def test_no_re_add_while_a_lower_number_is_free(node):
    """toxcore gives an added friend the lowest free number: with a hole below, the friend would
    come back under another number than everything keyed by it."""
    keys = [public_key() for _ in range(3)]
    numbers = [node.friend_add_norequest(k) for k in keys]
    node.friend_delete(numbers[0])
    assert not node.readd_friend(numbers[2])
    assert node.friend_public_key(numbers[2]) == keys[2]
    assert node.friend_by_public_key(keys[2]) == numbers[2]


def test_re_adding_an_unknown_friend_does_nothing(node):
    assert not node.readd_friend(7)
    assert node.friends() == []


class Recording:
    """A real ToxNode whose re-adds are counted."""

    def __init__(self, node: ToxNode) -> None:
        self._node = node
        self.readds: list[int] = []

    def readd_friend(self, friend: int) -> bool:
        self.readds.append(friend)
        return self._node.readd_friend(friend)

    def __getattr__(self, name):
        return getattr(self._node, name)


def identity_of(node: ToxNode, last_online: dict[int, float | None], seen: Path) -> SimpleNamespace:
    """What Identity.search_friends reads of its identity, around a real node."""
    return SimpleNamespace(
        seen=LastSeen(seen),
        search=FriendSearch(refresh=5, window=60),
        node=Recording(node),
        last_online=lambda friend: last_online.get(friend),
        offline_since={},
        user=SimpleNamespace(mailbox="ann"),
    )


def test_the_identity_re_adds_a_friend_it_saw_and_keeps_when_it_was_last_seen(node, tmp_path):
    key = public_key()
    friend = node.friend_add_norequest(key)
    identity = identity_of(node, {friend: 1700000000.0}, tmp_path / "ann.seen.json")
    identity.search.lost(key, now=time.monotonic() - 5)  # one period ago: due now
    Identity.search_friends(identity)  # type: ignore[arg-type]  # what the method reads, around a real node
    assert identity.node.readds == [friend]
    assert node.friend_last_online(friend) is None  # toxcore forgot it with the friend …
    assert identity.offline_since == {key: 1700000000.0}  # … this run did not
    assert LastSeen(tmp_path / "ann.seen.json").get(key) == 1700000000.0  # nor does the next one


def test_a_friend_never_online_is_never_re_added_its_friend_request_would_be_lost(node, tmp_path):
    """A friend added with a request that was not answered yet: toxcore resends the request only
    for a friend added with one (a re-add without a request would drop it for good)."""
    other = ToxNode(ToxOptions(udp=False))
    try:
        friend = node.friend_add(other.address, b"hello, it's ann")
    finally:
        other.close()
    key = node.friend_public_key(friend)
    identity = identity_of(node, {friend: None}, tmp_path / "ann.seen.json")
    identity.search.joined([key], now=time.monotonic() - 5)
    Identity.search_friends(identity)  # type: ignore[arg-type]  # what the method reads, around a real node
    assert identity.node.readds == []
    assert identity.search.searching() == set()


def test_last_seen_keeps_the_latest_time_and_survives_a_restart(tmp_path):
    path = seen_path(tmp_path / "ann.tox")
    assert path == tmp_path / "ann.seen.json"
    seen = LastSeen(path)
    seen.keep(A, 200.0)
    seen.keep(A, 100.0)  # an older time changes nothing
    assert LastSeen(path).get(A) == 200.0
    assert LastSeen(path).get(B) is None
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_damaged_last_seen_file_costs_only_its_times(tmp_path, caplog):
    path = tmp_path / "ann.seen.json"
    path.write_text("[not, json")
    assert LastSeen(path).get(A) is None
    assert "unreadable" in caplog.text
    path.write_text('["a list"]')
    assert LastSeen(path).get(A) is None
