"""A/B of the sending bridge's pacing (tox.upload_limit_kbit) on the lab internet, one series.

`python -m bench.pacing_ab --limits 0,4500 --pairs 3` (inside `unshare -n`): one lab internet
(bench/internet.py: src and dst behind home routers, 5 Mbit/s up, the router's 200 ms tbf queue),
then rounds of one large mail by the ordinary route (Postfix to Postfix over SMTP with STARTTLS)
and one by Tox for each limit, the order of the limits turned around every round so that drift
of the shared machine hits every arm alike. Before each bridged mail src's bridge restarts with
that limit (each arm starts from a cold Tox link). Prints MiB/s and the ratio to the ordinary
mail of the same round; --json writes every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import yaml

from toxbridge.lab.internet import Link

from . import mail as mails
from .internet import DEFAULT_LINK, InternetLab, large_mail
from .lab import wait_log_time
from .stats import MIB


def restart_with_limit(lab: InternetLab, kbit: int) -> None:
    src, dst = lab.homes()
    config = yaml.safe_load(src.config_path.read_text())
    config["tox"]["upload_limit_kbit"] = kbit
    src.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    ben = dst.tox_ids["ben"][:8].lower()
    src.stop_bridge()
    mark = src.log_mark()
    src.start_bridge()
    wait_log_time(src, rf"ann: friend {ben} online", mark, 180)
    # the greeting (capabilities: zlib) follows the connection; the first mail must see it
    wait_log_time(src, r"ann: friend .* can .*zlib", mark, 60)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pacing_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--limits", default="0,4500", help="upload_limit_kbit values, comma-separated (0,4500)")
    p.add_argument("--pairs", type=int, default=3, help="rounds (3)")
    p.add_argument("--large-mib", type=float, default=25)
    p.add_argument("--up", type=float, default=DEFAULT_LINK.up_mbit)
    p.add_argument("--body", default="base64", choices=["hex", "base64", "words"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    # started in the background, SIGINT is ignored: SIGTERM tears the lab down the same way
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    mails.BODY = args.body
    limits = [int(x) for x in args.limits.split(",")]
    link = Link(down_mbit=DEFAULT_LINK.down_mbit, up_mbit=args.up)
    size = int(args.large_mib * MIB)
    seed = os.urandom(1 << 16)
    root = Path(tempfile.mkdtemp(prefix="toxbridge-pacing-", dir="/tmp"))
    root.chmod(0o755)
    samples: list[dict] = []
    try:
        with InternetLab(root, link, compression=True) as lab:
            print(f"lab up ({link.describe()}), body {args.body}, {args.large_mib} MiB", flush=True)
            ordinary, bridged = lab.paths()
            for round_ in range(args.pairs):
                base = large_mail(ordinary, size, seed, 0.05)
                print(f"round {round_ + 1}: ordinary {base.get('mib_s', 0):.3f} MiB/s", flush=True)
                samples.append({"round": round_, "arm": "ordinary", **base})
                order = limits if round_ % 2 == 0 else limits[::-1]
                for kbit in order:
                    restart_with_limit(lab, kbit)
                    before = lab.net.qdisc_stats("src", "wan")
                    out = large_mail(bridged, size, seed, 0.05)
                    after = lab.net.qdisc_stats("src", "wan")
                    # the uplink router's tbf: packets its 200 ms queue dropped, bytes it sent
                    out["router_dropped"] = after.dropped - before.dropped
                    out["router_sent_bytes"] = after.sent_bytes - before.sent_bytes
                    ratio = out.get("mib_s", 0) / base["mib_s"] if base.get("mib_s") else 0
                    print(
                        f"round {round_ + 1}: limit {kbit} kbit/s {out.get('mib_s', 0):.3f} MiB/s "
                        f"({ratio:.0%} of ordinary), router dropped {out['router_dropped']} packets, "
                        f"sent {out['router_sent_bytes'] / MIB:.1f} MiB",
                        flush=True,
                    )
                    samples.append({"round": round_, "arm": kbit, "ratio": ratio, **out})
    finally:
        if args.json:
            args.json.write_text(json.dumps(samples, indent=1, default=str))
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
