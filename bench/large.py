"""One large mail (25 MiB by default) bridged end to end, with the bridges' memory sampled.

Bridged: SMTP into src's Postfix → src bridge → Tox → dst bridge → dst Dovecot; the rate is the
mail's size over SMTP accepted → visible in IMAP. Where the time goes is read from what the
processes leave behind: the receiving bridge's partial file (created when the transfer is
offered, grows while chunks arrive, removed once complete and read back), its delivery log line
(transfer start → Dovecot's answer) and the sending bridge's log line (the answer came back).
For context the same bytes also take the direct path (dst's Postfix → Dovecot) and a bare LMTP
delivery into Dovecot (the last leg alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from toxbridge.config import Endpoint
from toxbridge.mail import lmtp_out

from . import mail as mails
from .imapwatch import ImapWatch
from .lab import BenchLab, log_lines, wait_log_time
from .procstat import CpuMeter, RssSampler
from .small import wait_visible
from .stats import MIB


class PartialWatch:
    """Watches the receiving bridge's partial-transfer directory: when the file appeared, when it
    last grew, when it was removed (the transfer was complete and read back)."""

    def __init__(self, directory: Path, interval: float = 0.005) -> None:
        self.directory, self.interval = directory, interval
        self.created: float | None = None
        self.last_growth: float | None = None
        self.gone: float | None = None
        self.size = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="partial-watch", daemon=True)

    def start(self) -> PartialWatch:
        self._before = set(self.directory.glob("*")) if self.directory.exists() else set()
        self._thread.start()
        return self

    def _run(self) -> None:
        path = None
        while not self._stop.is_set():
            now = time.monotonic()
            if path is None:
                new = set(self.directory.glob("*")) - self._before if self.directory.exists() else set()
                if new:
                    path = new.pop()
                    self.created = now
            else:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    self.gone = now
                    return
                if size > self.size:
                    self.size, self.last_growth = size, now
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _logged(field: str, line: str) -> str:
    """Group 1 of regex `field` in a log line that has it."""
    match = re.search(field, line)
    assert match is not None, f"no /{field}/ in {line!r}"
    return match.group(1)


def _mono_of(wall: float) -> float:
    return wall - (time.time() - time.monotonic())


def run_bridged(
    lab: BenchLab,
    size: int,
    seed: bytes,
    poll: float = 0.005,
    around: Callable[[], contextlib.AbstractContextManager] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict, bytes]:
    """Returns the result and the message bytes (the raw transfer sends the same bytes)."""
    src, dst = lab.homes()
    message = mails.compose_large(
        f"large-{uuid.uuid4().hex[:8]}", src.address("ann"), dst.tox_address("ben"), size, seed
    )
    marks = src.log_mark(), dst.log_mark()
    pids = lab.pids()
    partial = PartialWatch(dst.root / "state" / "partial" / "ben")
    with ImapWatch(dst.dovecot.imap_port, "ben", "ben-pw", poll) as watch:
        sampler = RssSampler(pids).start()
        cpu = CpuMeter(pids).start()
        partial.start()
        with around() if around else contextlib.nullcontext():
            mails.inject(src.postfix.smtp_port, [message], 1, timeout=600)
            outcome = wait_visible(watch, [message.bench_id], 600, src.postfix.flush)
            answered = wait_log_time(src, rf"peer={lab.ben_key}, .*status=sent", marks[0], 300)
        partial.stop()
        memory = sampler.stop()
        cpu_used = cpu.stop()
        visible = watch.seen.get(message.bench_id, (None,))[0]
    # the receiver's delivery line of this mail: the largest one logged since the mark (a small
    # mail deferred earlier may arrive meanwhile)
    wait_log_time(dst, r"to=<ben@dst\.test>.*status=sent", marks[1], 10)
    rx_lines = log_lines(dst, r"to=<ben@dst\.test>.*status=sent", marks[1])
    rx_line = max(rx_lines, key=lambda line: int(_logged(r"size=(\d+)", line)))
    rx_done = _mono_of(datetime.datetime.strptime(rx_line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    rx_start = rx_done - float(_logged(r"delay=([0-9.]+)", rx_line))
    result = {
        "size": message.size,
        **outcome,
        "submit_s": message.accepted_at - message.started_at,
        "accepted_to_visible_s": visible - message.accepted_at if visible else None,
        "started_to_visible_s": visible - message.started_at if visible else None,
        "stages_s": {
            # Postfix queue, LMTP into the src bridge, payload built and hashed, offer over Tox
            "postfix_to_offer": (partial.created or rx_start) - message.accepted_at,
            # first byte to last byte on the receiving side (partial file created → grown to full size)
            "tox_transfer": (partial.last_growth - partial.created)
            if partial.created and partial.last_growth
            else None,
            # complete → read back, hashed, decoded → delivered to Dovecot (log line) ...
            "receiver_after_transfer": (rx_done - partial.last_growth) if partial.last_growth else None,
            # ... → first seen in IMAP (negative: IMAP saw it before the bridge logged its answer)
            "visible_after_delivery_log": (visible - rx_done) if visible else None,
            # the result packet back to src, src's answer to its Postfix
            "answer_back": _mono_of(answered) - rx_done,
        },
        "memory": memory,
        "cpu": cpu_used,
    }
    if result["accepted_to_visible_s"]:
        result["mib_s"] = message.size / MIB / result["accepted_to_visible_s"]
    if result["stages_s"]["tox_transfer"]:
        result["tox_leg_mib_s"] = message.size / MIB / result["stages_s"]["tox_transfer"]
    log(
        f"  bridged {message.size / MIB:.1f} MiB: accepted→IMAP {result['accepted_to_visible_s']:.2f} s"
        if result["accepted_to_visible_s"]
        else f"  bridged large mail failed: {outcome}"
    )
    return result, message.data


def run_direct(
    lab: BenchLab, size: int, seed: bytes, poll: float = 0.005, log: Callable[[str], None] = print
) -> dict:
    """The same size the direct way (dst's Postfix → Dovecot), then as a bare LMTP delivery."""
    src, dst = lab.homes()
    out: dict = {}
    with ImapWatch(dst.dovecot.imap_port, "direct", "direct-pw", poll) as watch:
        message = mails.compose_large(
            f"large-direct-{uuid.uuid4().hex[:8]}", src.address("ann"), dst.address("direct"), size, seed
        )
        mails.inject(dst.postfix.smtp_port, [message], 1, timeout=600)
        outcome = wait_visible(watch, [message.bench_id], 300, dst.postfix.flush)
        seen = watch.seen.get(message.bench_id, (None,))[0]
        out["postfix"] = {
            **outcome,
            "size": message.size,
            "submit_s": message.accepted_at - message.started_at,
            "accepted_to_visible_s": seen - message.accepted_at if seen else None,
        }

        bare = mails.compose_large(
            f"large-lmtp-{uuid.uuid4().hex[:8]}", src.address("ann"), dst.address("direct"), size, seed
        )
        t0 = time.monotonic()
        replies = asyncio.run(
            lmtp_out.deliver(
                Endpoint("127.0.0.1", dst.dovecot.lmtp_port),
                bare.sender,
                ["direct"],
                bare.data,
                "bench.invalid",
                timeout=300,
            )
        )
        answered = time.monotonic() - t0
        missing = watch.wait([bare.bench_id], 60)
        seen = watch.seen.get(bare.bench_id, (None,))[0]
        out["lmtp_only"] = {
            "size": bare.size,
            "reply": str(replies[0]),
            "answered_s": answered,
            "visible_s": seen - t0 if seen else None,
            "missing": len(missing),
        }
    if out["postfix"]["accepted_to_visible_s"]:
        out["postfix"]["mib_s"] = size / MIB / out["postfix"]["accepted_to_visible_s"]
    log(
        f"  direct {size / MIB:.1f} MiB: accepted→IMAP {out['postfix']['accepted_to_visible_s'] or 0:.2f} s; "
        f"bare LMTP into Dovecot {answered:.2f} s"
    )
    return out
