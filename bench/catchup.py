"""Catch-up: mails deferred while the peer bridge is down, then the time from the friend
connection coming up (src's log: `friend … online`) to the last of them visible in IMAP.

dst's bridge is stopped cleanly (src sees it offline at once), the mails go into src's Postfix,
whose bridge answers 4.4.1 (friend offline) so Postfix defers them all; src's Postfix backs off
for half an hour (lab.SLOW_POSTFIX), so only the bridge's push (`postqueue -i`) brings them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from toxbridge.lab.ports import wait_until

from . import mail as mails
from .imapwatch import ImapWatch
from .lab import BenchLab, log_lines, wait_log_time
from .small import deferred_by_bridge, queue_id, wait_visible

TIMEOUT = 120.0


def run(
    lab: BenchLab,
    count: int = 100,
    size: int = 10 * 1024,
    poll: float = 0.005,
    log: Callable[[str], None] = print,
) -> dict:
    src, dst = lab.homes()
    mark = src.log_mark()
    dst.stop_bridge()
    wait_log_time(src, rf"ann: friend {lab.ben_key} went offline", mark, TIMEOUT)
    run_id = uuid.uuid4().hex[:8]
    batch = [
        mails.compose(f"catchup-{run_id}-{i:04d}", src.address("ann"), dst.tox_address("ben"), size)
        for i in range(count)
    ]
    mails.inject(src.postfix.smtp_port, batch, 4)

    def deferred() -> int:
        return sum(1 for q in src.postfix.queue() if q.get("queue_name") == "deferred")

    t_inject = time.monotonic()
    if not wait_until(lambda: deferred() >= count, TIMEOUT, interval=0.2):
        raise TimeoutError(f"only {deferred()} of {count} mails deferred: {src.postfix.queue()[:3]!r}")
    deferred_s = time.monotonic() - t_inject
    with ImapWatch(dst.dovecot.imap_port, "ben", "ben-pw", poll) as watch:
        mark = src.log_mark()
        t_start = time.time()
        dst.start_bridge()
        online = wait_log_time(src, rf"ann: friend {lab.ben_key} online", mark, TIMEOUT)
        outcome = wait_visible(watch, [m.bench_id for m in batch], TIMEOUT, src.postfix.flush)
        resolution = watch.resolution()
    seen = {m.bench_id: watch.seen[m.bench_id][1] for m in batch if m.bench_id in watch.seen}
    again = deferred_by_bridge(src, mark)
    first_try = [seen[m.bench_id] for m in batch if queue_id(m) not in again and m.bench_id in seen]
    pushes = log_lines(src, r"ann: friend \S+ online: pushed", mark)
    out = {
        "mails": count,
        "size": size,
        **outcome,
        "deferring_s": deferred_s,
        "restart_to_friend_online_s": online - t_start,
        "catch_up_s": (max(seen.values()) - online) if seen else None,
        "first_visible_after_online_s": (min(seen.values()) - online) if seen else None,
        # deferred again by the bridge after the push: they wait for a later push or Postfix's
        # backoff; the bench flushed the queue after small.STALL seconds without an arrival
        "deferred_again": len([m for m in batch if queue_id(m) in again]),
        "deferral_reasons": sorted(set(again.values())),
        "first_try_mails": len(first_try),
        "first_try_catch_up_s": (max(first_try) - online) if first_try else None,
        "push_log": [line[24:300] for line in pushes],
        "poll": resolution,
    }
    log(
        f"  catch-up: {len(seen)} of {count} in IMAP {out['catch_up_s']:.2f} s after the friend connection; "
        f"{out['deferred_again']} deferred again, the other {len(first_try)} in {out['first_try_catch_up_s'] or 0:.2f} s"
        if seen
        else f"  catch-up failed: {outcome}"
    )
    return out
