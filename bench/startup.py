"""Start-up: both bridges started at the same moment (fresh processes, profiles on disk, 5
identities each) → each side's friend connection is up (log: `friend … online`) and each has seen
the other's greeting (`friend … is a bridge`, from then on mail flows). Times are wall-clock from
the bridges' log lines (millisecond stamps)."""

from __future__ import annotations

import time
from collections.abc import Callable

from .lab import BenchLab, _parallel, wait_log_time
from .procstat import cpu_seconds, memory

TIMEOUT = 120.0


def run(lab: BenchLab, log: Callable[[str], None] = print) -> dict:
    src, dst = lab.homes()
    _parallel([src.stop_bridge, dst.stop_bridge])
    marks = src.log_mark(), dst.log_mark()
    t0 = time.time()
    _parallel([src.start_bridge, dst.start_bridge])
    listening = time.time() - t0
    times = {
        "src_network": wait_log_time(src, r"ann: Tox network online", marks[0], TIMEOUT),
        "dst_network": wait_log_time(dst, r"ben: Tox network online", marks[1], TIMEOUT),
        "src_friend_online": wait_log_time(src, rf"ann: friend {lab.ben_key} online", marks[0], TIMEOUT),
        "dst_friend_online": wait_log_time(dst, rf"ben: friend {lab.ann_key} online", marks[1], TIMEOUT),
        "src_greeting": wait_log_time(src, rf"ann: friend {lab.ben_key} is a bridge", marks[0], TIMEOUT),
        "dst_greeting": wait_log_time(dst, rf"ben: friend {lab.ann_key} is a bridge", marks[1], TIMEOUT),
    }
    out = {"listening_s": listening, **{f"{k}_s": v - t0 for k, v in times.items()}}
    out["friend_connection_s"] = max(out["src_friend_online_s"], out["dst_friend_online_s"])
    out["greeting_s"] = max(out["src_greeting_s"], out["dst_greeting_s"])
    log(
        f"  friend connection {out['friend_connection_s']:.2f} s after starting both bridges "
        f"(Tox network joined after {max(out['src_network_s'], out['dst_network_s']):.2f} s)"
    )
    return out


def idle_memory(lab: BenchLab, settle: float = 5.0, samples: int = 10) -> dict:
    """RSS of both bridges (each serving lab.identities identities, friends connected, no mail),
    after `settle` seconds: the largest of a few samples a little apart, and VmHWM; and the CPU
    an idle bridge burns (its identities' iterate loops) over those seconds."""
    pids = lab.pids()
    cpu0, t0 = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic()
    time.sleep(settle)
    out = {}
    for name, pid in pids.items():
        readings = []
        for _ in range(samples):
            readings.append(memory(pid))
            time.sleep(0.1)
        out[name] = {
            "rss": max(r["rss"] for r in readings),
            "hwm": readings[-1]["hwm"],
            "identities": lab.identities,
        }
    wall = time.monotonic() - t0
    for name, pid in pids.items():
        out[name]["idle_cpu_share"] = (cpu_seconds(pid) - cpu0[name]) / wall
    return out
