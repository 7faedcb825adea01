"""When to search an offline friend afresh: the friend reconnection after a restart (issue 18).

Why. A restarted Tox instance has a new DHT key, and the two sides of a friendship find each
other again only when one tells the other its DHT key in an onion "dhtpk" packet (toxcore
0.2.18, onion_client.c). Each side sends that packet at once when the friend goes offline or
its own node starts, then not again for ONION_DHTPK_SEND_INTERVAL (30 s). The first one is
often wasted: the staying side sends it while the restarted one is not up yet, or to the
onion key of the friend's previous run (still stored at the announce nodes); the restarted
side sends it before its onion paths through the home routers work. Then the friendship waits
for the 30 s timer, or for toxcore's friend search, which backs off (every 3 s, then 16 s,
32 s, …). Measured on the lab internet (bench/reconnect.py, one run, alternating): toxcore
alone p50 30.0 s, p95 59.9 s; with the re-add below p50 9.0 s, p95 30.0 s. That lab had one DHT
node, which starves toxcore's onion (lab/bootstrapd.py, LAB_DHT_SIZE); on 8 nodes the re-add
still pays, less: p50 8.9 → 8.0 s, p95 9.0 → 8.0 s (docs/benchmarks.md).

tox_friend_delete + tox_friend_add_norequest (same key, same friend number) resets both: a new
search from a clean node list and the dhtpk packet sent again as soon as the friend's announce
nodes answer. So while a friend is offline, for a window after the friend went offline or our
own node came onto the network (the two moments a DHT key changes), the bridge re-adds the
friend every REFRESH_SECONDS. After the window toxcore's own backoff takes over again: a friend
away for days is not searched every few seconds.

No I/O here: the identity tells it what happens and asks which friends are due.
"""

from __future__ import annotations

# Re-add an offline friend this often: the first dhtpk packet of a search goes out about a
# second after the re-add; 5 s paid better than 10 s (docs/benchmarks.md).
REFRESH_SECONDS = 5.0
# For this long after the friend went offline or our node joined the network.
WINDOW_SECONDS = 120.0


class FriendSearch:
    """Which offline friends to re-add now. Keys are friends' public keys."""

    def __init__(self, refresh: float = REFRESH_SECONDS, window: float = WINDOW_SECONDS) -> None:
        if refresh <= 0 or window < 0:
            raise ValueError("refresh must be > 0 and window >= 0")
        self.refresh, self.window = refresh, window
        self._until: dict[bytes, float] = {}  # key → end of its window
        self._next: dict[bytes, float] = {}  # key → when it is due next

    def lost(self, key: bytes, now: float) -> None:
        """The friend went offline: it comes back with a new DHT key, or we lost its route."""
        self._open(key, now)

    def joined(self, offline: list[bytes], now: float) -> None:
        """Our node started (a new DHT key) or came back onto the network: every offline friend
        must learn where it is."""
        for key in offline:
            self._open(key, now)

    def found(self, key: bytes) -> None:
        """The friend is online (or no longer a friend): nothing to search."""
        self._until.pop(key, None)
        self._next.pop(key, None)

    def due(self, now: float) -> list[bytes]:
        """The friends to re-add now; each is then not due again for `refresh` seconds."""
        ready = []
        for key, until in list(self._until.items()):
            if now > until:
                self.found(key)
            elif now >= self._next[key]:
                self._next[key] = now + self.refresh
                ready.append(key)
        return ready

    def searching(self) -> set[bytes]:
        return set(self._until)

    def _open(self, key: bytes, now: float) -> None:
        self._until[key] = now + self.window
        # the first re-add one period in: at once would only repeat what toxcore just did
        self._next.setdefault(key, now + self.refresh)
