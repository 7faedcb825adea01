"""Pacing the bridge's file chunks under the household's uplink (tox.upload_limit_kbit).

Why: toxcore raises a connection's send rate to 1.2x what it sent over the last 600 ms until it
sees loss. A home router's deep queue (200 ms and more) hides the loss until the queue is full;
then toxcore resends into the full queue and its rate collapses (docs/benchmarks.md, "Pacing").
Handing toxcore the chunks no faster than a little under the uplink keeps that queue short, so
toxcore's own rate never needs to back off.

TokenBucket is the arithmetic alone (no clock of its own, no I/O); Pacer is the thin asyncio
layer that holds chunk sends back in order and releases them as the bucket allows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable

from .library import FILE_CHUNK_SIZE

# What a 1371-byte file chunk costs on the wire besides its bytes: IPv4 + UDP headers (28),
# net_crypto's packet type, nonce, MAC, buffer numbers and padding, the file data header (~50).
PACKET_OVERHEAD = 80
# Chunks that may leave back to back: a 5 Mbit/s uplink drains 16 of them in ~40 ms.
BURST_CHUNKS = 16


class TokenBucket:
    """`rate` bytes per second, at most `burst` bytes saved up while idle."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now

    def wait(self, cost: float, now: float) -> float:
        """Seconds from `now` until `cost` bytes may go (0: now). Takes nothing."""
        self._refill(now)
        # a cost above the burst would never fit: let it go once the bucket is full
        need = min(cost, self.burst) - self._tokens
        return max(0.0, need / self.rate)

    def take(self, cost: float, now: float) -> None:
        """Spend `cost` bytes (the balance may go negative by one oversized cost)."""
        self._refill(now)
        self._tokens -= cost


def bucket_for(kbit: int) -> TokenBucket:
    rate = kbit * 1000 / 8
    return TokenBucket(rate, BURST_CHUNKS * (FILE_CHUNK_SIZE + PACKET_OVERHEAD))


SENT, GONE, LATER = "sent", "gone", "later"
# toxcore refills a connection's packet budget as it iterates (every 1 ms during transfers).
RETRY = 0.002


class Pacer:
    """One per bridge (the uplink is shared by every identity). Each transfer's sends run in the
    order they were submitted; transfers take turns, one chunk each, as toxcore itself serves
    them. A send answers SENT; GONE when its transfer has ended meanwhile (that costs nothing);
    or LATER when toxcore cannot take it yet (that friend's connection is full): it stays first
    in its transfer's line while the other transfers take their turns, and when every transfer
    is refused all are tried again after RETRY seconds, as toxcore's budget refills with each
    iteration. A full connection to one friend must not set the pace for the others."""

    def __init__(self, bucket: TokenBucket, clock: Callable[[], float] | None = None) -> None:
        self._bucket = bucket
        self._queues: dict[Hashable, deque[tuple[int, Callable[[], str]]]] = {}
        self._turns: deque[Hashable] = deque()  # keys with something queued, next first
        self._timer: asyncio.TimerHandle | None = None
        self._clock = clock

    def submit(self, key: Hashable, size: int, send: Callable[[], str]) -> None:
        """Run `send` (which hands `size` payload bytes of transfer `key` to toxcore) when the
        pace allows."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._turns.append(key)
        queue.append((size + PACKET_OVERHEAD, send))
        if self._timer is None:
            self._drain()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _drain(self) -> None:
        self._timer = None
        refused = 0  # transfers in a row that toxcore could not take
        while self._turns:
            if refused == len(self._turns):
                self._timer = asyncio.get_running_loop().call_later(RETRY, self._drain)
                return
            key = self._turns[0]
            queue = self._queues[key]
            cost, send = queue[0]
            now = self._now()
            delay = self._bucket.wait(cost, now)
            if delay > 0:
                self._timer = asyncio.get_running_loop().call_later(delay, self._drain)
                return
            outcome = send()
            if outcome == LATER:
                refused += 1
                self._turns.rotate(-1)
                continue
            refused = 0
            queue.popleft()
            self._turns.rotate(-1)
            if not queue:
                del self._queues[key]
                self._turns.remove(key)
            if outcome == SENT:
                self._bucket.take(cost, now)
