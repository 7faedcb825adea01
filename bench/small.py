"""Small mails (10 KB): throughput and latency of one path, SMTP accepted → visible in IMAP.

Three steps on the same path:
  warm-up   a few mails, not measured (Postfix spawns its processes, links warm up);
  latency   mails one at a time, each sent when the previous one is visible: latency unloaded;
  burst     N mails over a few parallel SMTP sessions: msg/s = N / (first MAIL FROM → last
            visible), and latency under that load (mostly time spent queueing).

A mail the bridge answers 4xx is deferred by Postfix and waits for its backoff (30 minutes in
this lab). The bench counts those (Postfix's queue id from the SMTP reply, the bridge's
`QUEUEID: ... status=deferred` log line), flushes the queue after STALL seconds without an
arrival so that the run ends, and also reports the rate of the mails that got through at the
first attempt.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from toxbridge.lab import netns
from toxbridge.lab.household import Household

from . import mail as mails
from .imapwatch import ImapWatch
from .lab import log_lines
from .procstat import CpuMeter
from .stats import per_second, summary


@dataclass
class MailPath:
    name: str  # "direct" | "bridged"
    smtp_port: int  # the Postfix the mail is injected into
    imap_port: int
    user: str  # the Dovecot mailbox that receives
    password: str
    sender: str
    recipient: str
    flush: Callable[[], None]  # push the sending Postfix's deferred mail (only when stalled)
    bridge: Household | None = None  # the sending Household whose bridge log says what it deferred
    # On the lab internet: the network namespaces of the sending Postfix and of the receiving Dovecot
    sender_ns: str | None = None
    receiver_ns: str | None = None


@contextlib.contextmanager
def watching(path: MailPath, poll: float) -> Iterator[ImapWatch]:
    """An IMAP watch on the path's receiving mailbox, connected from inside its namespace (a
    socket stays in the namespace it was made in, whatever the thread does later)."""
    with netns.entered(path.receiver_ns):
        watch = ImapWatch(path.imap_port, path.user, path.password, poll).start()
    try:
        yield watch
    finally:
        watch.stop()


def inject(path: MailPath, batch: list[mails.Mail], sessions: int, timeout: float = 120.0) -> None:
    """Hand mails to the path's sending Postfix, from inside its namespace."""
    with netns.entered(path.sender_ns):
        mails.inject(path.smtp_port, batch, sessions, timeout)


STALL = 3.0
_QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")
_DEFERRED = re.compile(r" ([0-9A-Za-z]+): to=<.*status=deferred \((.*)\)$")


def deferred_by_bridge(home: Household, since: int) -> dict[str, str]:
    """Postfix queue id -> the bridge's 4xx text, for every deferral logged after `since`."""
    out: dict[str, str] = {}
    for line in log_lines(home, r"status=deferred", since):
        match = _DEFERRED.search(line)
        if match:
            out.setdefault(match.group(1), match.group(2))
    return out


def queue_id(mail: mails.Mail) -> str | None:
    match = _QUEUED_AS.search(mail.reply)
    return match.group(1) if match else None


def _ids(prefix: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run}-{i:05d}" for i in range(count)]


def wait_visible(
    watch: ImapWatch,
    ids: list[str],
    timeout: float,
    flush: Callable[[], None],
    stall: float = STALL,
    on_stall: Callable[[], None] | None = None,
) -> dict:
    """Wait for all ids; whenever none arrives for `stall` seconds, flush the sending Postfix's
    queue (a mail was deferred; Postfix would wait its backoff) and count it in the result.
    `on_stall` is called before the first flush."""
    deadline = time.monotonic() + timeout
    flushed = 0
    last_count, last_progress = -1, time.monotonic()
    while True:
        missing = watch.wait(ids, 1.0)
        if not missing:
            return {"missing": 0, "flushed": flushed}
        now = time.monotonic()
        if len(missing) != last_count:
            last_count, last_progress = len(missing), now
        elif now - last_progress > stall and flushed < 10:
            if not flushed and on_stall is not None:
                on_stall()
            flush()
            flushed += 1
            last_progress = now
        if now > deadline:
            return {"missing": len(missing), "flushed": flushed}


def run(
    path: MailPath,
    burst: int,
    latency_mails: int,
    sessions: int = 4,
    size: int = 10 * 1024,
    warmup: int = 5,
    poll: float = 0.005,
    cpu_pids: dict[str, int] | None = None,
    around_burst: Callable[[], contextlib.AbstractContextManager] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    result: dict = {"path": path.name, "size": size, "sessions": sessions}
    with watching(path, poll) as watch:
        # warm-up
        batch = [
            mails.compose(i, path.sender, path.recipient, size) for i in _ids(f"{path.name}-warm", warmup)
        ]
        if batch:
            inject(path, batch, sessions)
            result["warmup"] = wait_visible(watch, [m.bench_id for m in batch], 120, path.flush)

        # latency, one mail at a time
        mark = path.bridge.log_mark() if path.bridge else 0
        latencies = []
        problems = {"missing": 0, "flushed": 0}
        for bench_id in _ids(f"{path.name}-lat", latency_mails):
            one = mails.compose(bench_id, path.sender, path.recipient, size)
            inject(path, [one], 1)
            outcome = wait_visible(watch, [bench_id], 60, path.flush)
            problems = {k: problems[k] + outcome[k] for k in problems}
            if bench_id in watch.seen:
                latencies.append(watch.seen[bench_id][0] - one.accepted_at)
            time.sleep(0.05)
        result["latency_unloaded"] = {
            **summary(latencies),
            **problems,
            "deferred": len(deferred_by_bridge(path.bridge, mark)) if path.bridge else 0,
        }
        log(f"  {path.name}: latency unloaded p50 {_ms(result['latency_unloaded'].get('p50'))}")

        # burst
        batch = [
            mails.compose(i, path.sender, path.recipient, size) for i in _ids(f"{path.name}-burst", burst)
        ]
        mark = path.bridge.log_mark() if path.bridge else 0
        cpu = CpuMeter(cpu_pids or {}).start()
        cpu_used: dict = {}

        def take_cpu() -> None:  # at the end, or when the arrivals stall (then the rest waits for a retry)
            if not cpu_used:
                cpu_used.update(cpu.stop())

        with around_burst() if around_burst else contextlib.nullcontext():
            inject(path, batch, sessions)
            outcome = wait_visible(
                watch, [m.bench_id for m in batch], max(60.0, burst * 0.3), path.flush, on_stall=take_cpu
            )
            take_cpu()
        result["cpu"] = cpu_used
        deferred = deferred_by_bridge(path.bridge, mark) if path.bridge else {}
        retried = [m for m in batch if queue_id(m) in deferred]
        first_try = [m for m in batch if m not in retried]
        first = min(m.started_at for m in batch)
        accepted_last = max(m.accepted_at for m in batch)

        def seen(group):
            return [watch.seen[m.bench_id][0] for m in group if m.bench_id in watch.seen]

        visible, visible_first_try = seen(batch), seen(first_try)
        result["burst"] = {
            "mails": burst,
            **outcome,
            "deferred_by_bridge": len(retried),
            "deferral_reasons": sorted(set(deferred.values())),
            "inject_s": accepted_last - first,
            "accept_rate_msg_s": burst / (accepted_last - first) if accepted_last > first else None,
            "elapsed_s": (max(visible) - first) if visible else None,
            "throughput_msg_s": (len(visible) / (max(visible) - first)) if visible else None,
            # the mails not deferred: what the path does when nothing has to wait for a retry
            "first_try_mails": len(visible_first_try),
            "first_try_elapsed_s": (max(visible_first_try) - first) if visible_first_try else None,
            "first_try_throughput_msg_s": (len(visible_first_try) / (max(visible_first_try) - first))
            if visible_first_try
            else None,
            # arrivals in each second of the burst: does the path speed up as the burst goes on?
            "per_second": per_second(visible, first),
            "latency_loaded": summary(
                [watch.seen[m.bench_id][0] - m.accepted_at for m in batch if m.bench_id in watch.seen]
            ),
            "latency_loaded_first_try": summary(
                [watch.seen[m.bench_id][0] - m.accepted_at for m in first_try if m.bench_id in watch.seen]
            ),
        }
        result["poll"] = watch.resolution()
    b = result["burst"]
    log(
        f"  {path.name}: {burst} mails in {b['elapsed_s']:.2f} s = {b['throughput_msg_s']:.1f} msg/s; "
        f"{b['deferred_by_bridge']} deferred by the bridge, the other {b['first_try_mails']} "
        f"at {b['first_try_throughput_msg_s'] or 0:.1f} msg/s"
        if b["elapsed_s"]
        else f"  {path.name}: burst failed: {b}"
    )
    return result


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def run_lmtp(
    lmtp_port: int,
    imap_port: int,
    user: str,
    password: str,
    count: int,
    concurrency: int = 4,
    size: int = 10 * 1024,
    dedup_header: bool = True,
    poll: float = 0.005,
    log: Callable[[str], None] = print,
) -> dict:
    """The receiving bridge's last leg alone: `count` mails straight into Dovecot's LMTP the way
    the bridge delivers them (a new connection per mail, `concurrency` at a time), with the
    X-Toxbridge-Id header that Dovecot's dedup Sieve script looks up, or without it."""
    import asyncio
    import os

    from toxbridge.config import Endpoint
    from toxbridge.mail import lmtp_out

    kind = "with X-Toxbridge-Id" if dedup_header else "plain"
    batch = [mails.compose(i, "bench@bench.invalid", user, size) for i in _ids("lmtp", count)]
    for mail in batch:
        if dedup_header:
            mail.data = f"X-Toxbridge-Id: {os.urandom(32).hex()}\r\n".encode() + mail.data

    async def deliver_all() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for mail in batch:
            queue.put_nowait(mail)

        async def worker() -> None:
            while not queue.empty():
                mail = queue.get_nowait()
                mail.started = time.monotonic()
                replies = await lmtp_out.deliver(
                    Endpoint("127.0.0.1", lmtp_port), mail.sender, [user], mail.data, "bench.invalid"
                )
                mail.accepted, mail.reply = time.monotonic(), str(replies[0])

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    with ImapWatch(imap_port, user, password, poll) as watch:
        asyncio.run(deliver_all())
        missing = watch.wait([m.bench_id for m in batch], 60)
    visible = [watch.seen[m.bench_id][0] for m in batch if m.bench_id in watch.seen]
    first = min(m.started_at for m in batch)
    out = {
        "kind": kind,
        "mails": count,
        "concurrency": concurrency,
        "missing": len(missing),
        "refused": sum(1 for m in batch if not m.reply.startswith("250")),
        "throughput_msg_s": len(visible) / (max(visible) - first) if visible else None,
        "answered_msg_s": count / (max(m.accepted_at for m in batch) - first),
    }
    log(f"  Dovecot LMTP alone, {kind}: {out['throughput_msg_s'] or 0:.1f} msg/s")
    return out
