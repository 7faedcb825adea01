"""`make bench`: every comparison of issue 6 in one run; prints a table, writes JSON.

    python -m bench.run [--small N] [--large-mib M] [--json PATH] [--profile DIR] ...

Must run in a network namespace that has only loopback (the Makefile's target does
`unshare -n`): toxcore and tox-bootstrapd bind the wildcard address. Phases, in order:

  setup      tox-bootstrapd, households src and dst (Postfix, Dovecot, bridge with
             --identities identities each), friendship ann <-> ben; the raw pair starts too
  startup    both bridges restarted together -> friend connection
  memory     idle RSS of both bridges
  small      10 KB mails, direct (dst Postfix -> Dovecot) and bridged (src -> Tox -> dst)
  large      one --large-mib mail bridged (bridges' memory sampled), then the direct path
  raw        two bare ToxNode processes: small transfers on a cold link as the bridged burst's,
             the same bytes as the large mail, then small transfers on the warm link
  catchup    --catchup-mails deferred while dst's bridge is down, pushed when it is back
  internet   the lab internet (bench/internet.py): two households behind home routers on
             --down/--up Mbit/s links with --loss; the small burst, one-at-a-time latency and the
             large mail bridged and by ordinary e-mail (SMTP + STARTTLS between the two Postfix
             servers), and --restarts restarts of dst's bridge (friend reconnection p50/p95)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

from toxbridge.lab.bootstrapd import LAB_DHT_SIZE
from toxbridge.lab.internet import Link

from . import catchup, internet, internet_report, large, profiling, rawtox, report, small, stages, startup
from . import mail as mails_module
from .lab import BenchLab
from .stats import MIB

HERE = Path(__file__).resolve().parent
PHASES = ("startup", "small", "large", "raw", "catchup", "internet")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=300, help="mails in each small-mail burst (default 300)")
    p.add_argument("--latency-mails", type=int, default=20, help="mails sent one at a time for latency (20)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured mails before each path (5)")
    p.add_argument("--sessions", type=int, default=4, help="parallel SMTP sessions in a burst (4)")
    p.add_argument("--size", type=int, default=10 * 1024, help="small mail size in bytes (10240)")
    p.add_argument("--large-mib", type=float, default=25, help="large mail size in MiB (25)")
    p.add_argument("--catchup-mails", type=int, default=100, help="mails deferred for the catch-up (100)")
    p.add_argument("--identities", type=int, default=5, help="Tox identities per bridge (5)")
    p.add_argument(
        "--bridge-concurrency",
        type=int,
        default=None,
        help="an experiment: src Postfix's toxbridge_destination_concurrency_limit (deploy: 4)",
    )
    p.add_argument(
        "--stages",
        action="store_true",
        help="a diagnostic: split the receiving side of the bridged small mails (partial files "
        "watched every ms, dst's bridge delivering through a timestamping LMTP proxy)",
    )
    p.add_argument("--down", type=float, default=50, help="lab internet: download cap, Mbit/s (50)")
    p.add_argument("--up", type=float, default=5, help="lab internet: upload cap, Mbit/s (5)")
    p.add_argument("--loss", type=float, default=0.0, help="lab internet: random loss each way, 0..1 (0)")
    p.add_argument(
        "--queue-ms",
        type=int,
        default=200,
        help="lab internet: the routers' queue on a capped link, ms (200)",
    )
    p.add_argument("--restarts", type=int, default=10, help="lab internet: restarts of dst's bridge (10)")
    p.add_argument(
        "--dht-nodes",
        type=int,
        default=LAB_DHT_SIZE,
        help=f"lab internet: stable DHT nodes (tox-bootstrapd) on it ({LAB_DHT_SIZE}: the public Tox "
        "network has thousands; with 1, restarts starve the onion of live nodes, docs/benchmarks.md)",
    )
    p.add_argument(
        "--body",
        choices=mails_module.BODIES,
        default="line",
        help="what mail bodies are made of: line (small: one line repeated; large: hex text), "
        "words (prose-like), base64 (an attachment compressed already); see bench/mail.py",
    )
    p.add_argument(
        "--compression",
        choices=("on", "off"),
        default="on",
        help="the bridges' tox.compression (deploy default: on)",
    )
    p.add_argument(
        "--upload-limit",
        type=int,
        default=None,
        help="lab internet: src bridge's tox.upload_limit_kbit (default: 90 %% of --up, as "
        "deploy/toxbridge.yaml advises; 0: unpaced)",
    )
    p.add_argument("--poll", type=float, default=0.005, help="IMAP poll interval in seconds (0.005)")
    p.add_argument("--skip", default="", help=f"comma-separated phases to leave out: {','.join(PHASES)}")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a quick run: 5 small mails, a 1 MiB mail, idle memory, the lab internet with one "
        "restart; no startup, raw, catchup",
    )
    p.add_argument("--json", type=Path, default=HERE / "results.json", help="where to write the results")
    p.add_argument("--table", type=Path, default=None, help="also write the table to this file")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the bridges during the bridged burst and the large mail, into this directory",
    )
    p.add_argument("--native", action="store_true", help="with --profile: C frames too (py-spy --native)")
    p.add_argument("--keep", action="store_true", help="keep the lab directory (logs) afterwards")
    args = p.parse_args(argv)
    if args.smoke:
        args.small, args.latency_mails, args.warmup, args.large_mib, args.restarts = 5, 2, 1, 1, 1
        args.skip = ",".join(filter(None, [args.skip, "startup", "raw", "catchup"]))
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - set(PHASES)
    if unknown:
        p.error(f"unknown phases in --skip: {', '.join(sorted(unknown))}")
    return args


def loopback_only() -> bool:
    return all(name == "lo" for _, name in socket.if_nameindex())


def say(line: str) -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not loopback_only():
        say(
            "bench: this network namespace has more than loopback; run `make bench` "
            "(it runs inside `unshare -n`) so that nothing leaves this machine"
        )
        return 2
    root = Path(tempfile.mkdtemp(prefix="toxbridge-bench-", dir="/tmp"))
    root.chmod(0o755)
    results: dict = {
        "machine": report.machine(),
        "params": {
            k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
        },
        "errors": {},
    }
    results["params"]["profiled"] = args.profile is not None
    mails_module.BODY = args.body
    lab = BenchLab(root, args.identities, args.bridge_concurrency, args.stages, args.compression == "on")
    pair = None
    t_start = time.monotonic()
    seed = os.urandom(1 << 16)
    large_bytes = None

    def phase(name: str, fn):
        if name in args.skip:
            return None
        say(f"{name} ({time.monotonic() - t_start:.0f} s)")
        try:
            return fn()
        except Exception:  # one phase failing must not hide the others' numbers
            results["errors"][name] = traceback.format_exc()
            say(f"  {name} failed:\n{results['errors'][name]}")
            return None

    def profiled(phase_name: str):
        if args.profile is None:
            return None
        return lambda: profiling.record(lab.pids(), args.profile, phase_name, native=args.native)

    try:
        say(f"setup in {root}")
        lab.start_node()
        if "raw" not in args.skip:  # the raw pair befriends while the households start
            pair = rawtox.RawPair(root / "raw", lab.bootstrap[0]).start()
        lab.start()
        results["setup_s"] = lab.setup_seconds
        say(f"  households up, friends after {lab.setup_seconds['friends']:.1f} s")

        results["startup"] = phase("startup", lambda: startup.run(lab, say))
        results["memory_idle"] = startup.idle_memory(lab, settle=1.0 if args.smoke else 5.0)
        say(
            "  idle RSS: "
            + ", ".join(f"{k} {v['rss'] / MIB:.1f} MiB" for k, v in results["memory_idle"].items())
        )

        def small_phase() -> dict:
            src, dst = lab.homes()
            direct = small.MailPath(
                "direct",
                dst.postfix.smtp_port,
                dst.dovecot.imap_port,
                "direct",
                "direct-pw",
                src.address("ann"),
                dst.address("direct"),
                dst.postfix.flush,
            )
            bridged = small.MailPath(
                "bridged",
                src.postfix.smtp_port,
                dst.dovecot.imap_port,
                "ben",
                "ben-pw",
                src.address("ann"),
                dst.tox_address("ben"),
                src.postfix.flush,
                src,
            )
            out = {}
            for path, around in ((direct, None), (bridged, profiled("small-bridged"))):
                watching = args.stages and path is bridged
                if watching:
                    assert lab.lmtp_proxy is not None, "--stages makes the LMTP proxy"
                    proxy = lab.lmtp_proxy
                    burst_start: dict[str, float] = {}

                    @contextlib.contextmanager
                    def marked(
                        inner=around, burst_start=burst_start, proxy=proxy
                    ):  # the Dovecot leg's figures cover the burst only
                        burst_start["t"] = proxy.mark()
                        with inner() if inner else contextlib.nullcontext():
                            yield

                    around = marked
                    partials = stages.PartialFiles(dst.root / "state" / "partial" / "ben").start()
                out[path.name] = small.run(
                    path,
                    args.small,
                    args.latency_mails,
                    args.sessions,
                    args.size,
                    args.warmup,
                    args.poll,
                    lab.pids(),
                    around,
                    say,
                )
                if watching:
                    out[path.name]["stages"] = {
                        "receiving_bridge": partials.stop(),
                        "dovecot_leg": proxy.stats(burst_start.get("t", 0.0)),
                    }
            # the bridge's last leg alone, as the receiving bridge delivers (into ben's mailbox,
            # after the bridged mails, so Dovecot's dedup database is as full as it was for them)
            out["dovecot"] = {
                kind: small.run_lmtp(
                    dst.dovecot.lmtp_port,
                    dst.dovecot.imap_port,
                    "ben",
                    "ben-pw",
                    args.small,
                    args.sessions,
                    args.size,
                    kind == "dedup",
                    args.poll,
                    say,
                )
                for kind in ("dedup", "plain")
            }
            return out

        results["small"] = phase("small", small_phase)

        def large_phase() -> dict:
            nonlocal large_bytes
            size = int(args.large_mib * MIB)
            bridged, large_bytes = large.run_bridged(
                lab, size, seed, args.poll, profiled("large-bridged"), say
            )
            return {"bridged": bridged, "direct": large.run_direct(lab, size, seed, args.poll, say)}

        results["large"] = phase("large", large_phase)
        if pair is not None:
            payload = (
                large_bytes
                or large.mails.compose_large("raw", "a@b", "c@d", int(args.large_mib * MIB), seed).data
            )
            results["raw"] = phase(
                "raw",
                lambda: rawtox.run(
                    pair,
                    payload,
                    root,
                    args.small,
                    args.size,
                    preamble=args.warmup + args.latency_mails,
                    log=say,
                ),
            )
        results["catchup"] = phase(
            "catchup", lambda: catchup.run(lab, args.catchup_mails, args.size, args.poll, say)
        )
        link = Link(down_mbit=args.down, up_mbit=args.up, loss=args.loss, queue_ms=args.queue_ms)
        results["internet"] = phase(
            "internet",
            lambda: internet.run(
                root / "netlab",
                link,
                args.small,
                args.latency_mails,
                args.sessions,
                args.size,
                args.warmup,
                int(args.large_mib * MIB),
                args.restarts,
                seed,
                args.poll,
                say,
                args.compression == "on",
                int(args.up * 900) if args.upload_limit is None else args.upload_limit,
                args.dht_nodes,
            ),
        )
    except Exception:
        results["errors"]["setup"] = traceback.format_exc()
        say(results["errors"]["setup"])
    finally:
        say(f"stopping ({time.monotonic() - t_start:.0f} s)")
        if pair is not None:
            pair.stop()
        with contextlib.suppress(Exception):
            lab.stop()

    if args.profile is not None:
        results["profiles"] = {p.stem: profiling.summarize(p) for p in sorted(args.profile.glob("*.txt"))}
    results["machine"]["load_after"] = os.getloadavg()
    results["total_s"] = time.monotonic() - t_start
    results["goals"] = report.goals(results)
    results["goals_internet"] = internet_report.goals(results)
    results["table"] = report.table(results)
    if results.get("internet"):
        results["table"] += "\n\n" + internet_report.table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if args.table:
        args.table.write_text(results["table"] + "\n")
    say("")
    say(results["table"])
    say(f"\nJSON: {args.json}  ({results['total_s']:.0f} s in all)")
    if args.keep or results["errors"]:
        say(f"lab kept for a look: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
