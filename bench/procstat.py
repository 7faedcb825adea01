"""Memory and CPU of processes, from /proc.

VmRSS is the resident set now, VmHWM its high-water mark since the process started (the kernel
keeps it, so it catches a peak that a sampler would miss). CPU is utime+stime from /proc/PID/stat;
the machine's busy share from /proc/stat.
"""

from __future__ import annotations

import os
import threading
import time

MIB = 1024 * 1024
_TICK = os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict:
    """{"rss": bytes, "hwm": bytes} of a running process."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out["rss" if key == "VmRSS" else "hwm"] = int(value.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def udp_counters() -> dict[str, int]:
    """This network namespace's UDP counters (/proc/net/snmp): datagrams in and out, and the
    ones dropped because a socket's receive buffer was full."""
    with open("/proc/net/snmp") as snmp:
        rows = [line.split() for line in snmp if line.startswith("Udp:")]
    names, values = rows[0][1:], rows[1][1:]
    return {
        k: int(v)
        for k, v in zip(names, values, strict=False)
        if k in ("InDatagrams", "OutDatagrams", "RcvbufErrors", "InErrors")
    }


class CpuMeter:
    """CPU seconds used by some processes, and the machine's busy share, between start and stop."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine0 = machine_ticks()
        self._udp0 = udp_counters()
        return self

    def stop(self) -> dict:
        wall = time.monotonic() - self._t0
        busy1, total1 = machine_ticks()
        busy0, total0 = self._machine0
        udp = udp_counters()
        out = {
            "wall_s": wall,
            "machine_busy_share": (busy1 - busy0) / max(1, total1 - total0),
            "cores": os.cpu_count(),
            "udp": {k: v - self._udp0.get(k, 0) for k, v in udp.items()},
        }
        for name, pid in self.pids.items():
            try:
                out[f"{name}_cpu_s"] = cpu_seconds(pid) - self._cpu0[name]
            except OSError:
                out[f"{name}_cpu_s"] = None
        return out


class RssSampler:
    """Samples VmRSS of some processes every `interval` seconds in a thread; keeps the peak and a
    thinned series, and reads VmHWM at start and stop."""

    def __init__(self, pids: dict[str, int], interval: float = 0.01) -> None:
        self.pids, self.interval = dict(pids), interval
        self.peak = {name: 0 for name in pids}
        self.series: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self.before = {name: memory(pid) for name, pid in self.pids.items()}
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        last_kept = {name: -1.0 for name in self.pids}
        while not self._stop.is_set():
            now = time.monotonic() - self._t0
            for name, pid in self.pids.items():
                try:
                    rss = memory(pid)["rss"]
                except (OSError, KeyError):
                    continue
                self.peak[name] = max(self.peak[name], rss)
                if now - last_kept[name] >= 0.25:  # a thinned series for the JSON
                    self.series[name].append((round(now, 3), rss))
                    last_kept[name] = now
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        after = {}
        for name, pid in self.pids.items():
            try:
                after[name] = memory(pid)
            except OSError:
                after[name] = {}
        out = {}
        for name in self.pids:
            hwm0, hwm1 = self.before[name].get("hwm"), after[name].get("hwm")
            # VmHWM is the true peak when it rose during the window; when an earlier peak was
            # higher it did not move, and the sampled RSS peak is the best there is.
            rose = hwm0 is not None and hwm1 is not None and hwm1 > hwm0
            peak = hwm1 if rose else self.peak[name]
            out[name] = {
                "rss_before": self.before[name].get("rss"),
                "hwm_before": hwm0,
                "rss_peak_sampled": self.peak[name],
                "hwm_after": hwm1,
                "peak_during": peak,
                "peak_source": "VmHWM" if rose else "sampled VmRSS",
                "rss_after": after[name].get("rss"),
                "series": self.series[name],
            }
        return out
