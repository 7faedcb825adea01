"""What fewer bytes or fewer transfers would buy on a cold link: raw toxcore, one run.

`python -m bench.levers` (inside `unshare -n`, as `make bench` runs): a tox-bootstrapd and a
raw toxcore pair (bench/rawtox.py), then rounds of small-file bursts on a link as cold as the
bridged burst meets (idle IDLE_PAUSE seconds, then the 25 one-at-a-time files of the bridged
path's warm-up and latency mails), 4 in flight, each answered when complete. One burst per
shape in each round, the order turned around every round, so that drift of a shared machine
hits every shape alike:

  mail      10,240 B files: one 10 KB mail per transfer, as sent now
  words     4,200 B: the same mail compressed, prose-like text (zlib: ~40 %)
  line      450 B: the bench's default small mail compressed (one line repeated: ~3 %)
  batch2    20,480 B files counting two mails each: two mails in one transfer
  batch4    40,960 B files counting four mails each

Mails per second = files/s x mails per file. The bridge's own work (Postfix, Dovecot, the
bridge) is not in it: this is the Tox leg alone, the transport's answer to each lever.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from toxbridge.lab.bootstrapd import BootstrapNode
from toxbridge.lab.ports import free_port

from . import rawtox

SHAPES = {
    "mail": (10240, 1),
    "words": (4200, 1),
    "line": (450, 1),
    "batch2": (20480, 2),
    "batch4": (40960, 4),
}
IDLE_PAUSE = rawtox.IDLE_PAUSE


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mails", type=int, default=300, help="mails per burst (default 300)")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, from: " + ",".join(SHAPES))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    root = Path(tempfile.mkdtemp(prefix="toxbridge-levers-", dir="/tmp"))
    root.chmod(0o755)
    node = BootstrapNode(root / "bootstrapd", free_port(), free_port())
    node.start()
    pair = None
    results: dict[str, list[float]] = {s: [] for s in shapes}
    try:
        assert node.public_key is not None
        pair = rawtox.RawPair(root / "raw", (node.host, node.port, node.public_key)).start()
        pair.wait_connected()
        print(f"raw pair connected after {pair.connected_s:.1f} s", flush=True)
        for n in range(args.rounds):
            for shape in shapes if n % 2 == 0 else shapes[::-1]:
                size, per_file = SHAPES[shape]
                time.sleep(IDLE_PAUSE)
                pair.burst("bridge", 25, 10240, 1)
                got = pair.burst("bridge", args.mails // per_file, size, 4)
                mails_s = got["files_s"] * per_file
                results[shape].append(mails_s)
                print(
                    f"round {n + 1} {shape:7} {got['count']} x {size} B in {got['seconds']:.2f} s = "
                    f"{got['files_s']:.1f} files/s = {mails_s:.1f} mails/s; per second {got['per_second']}",
                    flush=True,
                )
    finally:
        if pair is not None:
            pair.stop()
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(results["mail"]) if results.get("mail") else None
    print(
        "\nmedian mails/s over the rounds" + (" (and against one mail per transfer, raw):" if base else ":")
    )
    for shape, values in results.items():
        if values:
            med = statistics.median(values)
            print(f"  {shape:7} {med:7.1f}" + (f"  {med / base:5.2f}x" if base else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
