"""Optional sampling profiles of the bridges with py-spy (`pip install py-spy`; `--profile DIR`).

py-spy attaches to a running bridge by pid and samples its Python stacks (with --native, the C
frames of libtoxcore, libcrypto, … too) until stopped with SIGINT; `--format raw` writes
collapsed stacks ("frame;frame;frame count"), summarised here into the functions that were on
the CPU themselves (self) and those below which the time was spent (inclusive). Profiling slows
the bridges: numbers from a profiled run are not the bench's numbers.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def record(pids: dict[str, int], out_dir: Path, phase: str, rate: int = 250, native: bool = False):
    """Profile each pid while the block runs; writes OUT_DIR/PHASE-NAME.txt (collapsed stacks)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in pids.items():
        cmd = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out_dir / f"{phase}-{name}.txt"),
        ]
        # --native unwinds C stacks and needs the process paused for each sample
        cmd.append("--native" if native else "--nonblocking")
        log = open(out_dir / f"{phase}-{name}.log", "wb")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=log), log))
    try:
        yield
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc, log in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    func, where = match.groups()
    return f"{func} ({Path(where).name})" if where else func


def summarize(path: Path, top: int = 15) -> dict:
    """Top functions by self and by inclusive samples, as shares of all samples."""
    self_counts: Counter = Counter()
    incl_counts: Counter = Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        stack, count = match.group(1), int(match.group(2))
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            incl_counts[name] += count

    def share(c):
        return round(c / total, 4) if total else 0

    return {
        "samples": total,
        "self": [(name, share(c)) for name, c in self_counts.most_common(top)],
        "inclusive": [(name, share(c)) for name, c in incl_counts.most_common(top * 2)],
    }
