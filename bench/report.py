"""The bench's table and its verdict on the goals of issue 6."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

from .stats import MIB, ratio

REPO = Path(__file__).resolve().parents[1]

LARGE_COST_FACTOR = 3  # a large mail may cost at most 3x its size at peak
IDLE_RSS_LIMIT = 80 * MIB  # "80 MB", read as MiB
CATCH_UP_LIMIT = 5.0


def machine() -> dict:
    def cmd(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        mem = 0
    try:
        from toxbridge.tox import library

        toxcore = ".".join(map(str, library.version()))
    except Exception:  # noqa: BLE001 — informational only
        toxcore = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kernel": platform.platform(),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "toxcore": toxcore,
        "postfix": cmd("postconf", "-dh", "mail_version"),
        "dovecot": cmd("dovecot", "--version"),
        "load_before": os.getloadavg(),
        "commit": cmd("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
        # bridge code changed but not committed when the bench ran
        "uncommitted": cmd("git", "-C", str(REPO), "status", "--porcelain", "--", "toxbridge").splitlines(),
    }


def _get(d: dict, *keys, default=None):
    for key in keys:
        if not isinstance(d, dict) or key not in d or d[key] is None:
            return default
        d = d[key]
    return d


def goals(r: dict) -> list[dict]:
    """[{goal, measured, met}] for every goal whose phase ran."""
    out = []
    direct, bridged = _get(r, "small", "direct"), _get(r, "small", "bridged")
    if direct and bridged:
        d_tp, b_tp = _get(direct, "burst", "throughput_msg_s"), _get(bridged, "burst", "throughput_msg_s")
        q = ratio(b_tp, d_tp)
        retried = _get(bridged, "burst", "deferred_by_bridge", default=0)
        first = _get(bridged, "burst", "first_try_throughput_msg_s")
        cold = _get(r, "raw", "small", "cold_4", "files_s")
        out.append(
            {
                "goal": "small mail: bridged msg/s >= 50% of direct",
                "measured": f"{_f(b_tp, 1)} vs {_f(d_tp, 1)} msg/s = {_pct(q)}"
                + (
                    f"; {retried} deferred by the bridge, the rest at {_f(first, 1)} msg/s = {_pct(ratio(first, d_tp))}"
                    if retried
                    else ""
                )
                + (
                    f" (raw toxcore alone on a link as cold: {_f(cold, 1)} files/s = {_pct(ratio(cold, d_tp))} of direct)"
                    if cold
                    else ""
                ),
                "met": None if q is None else q >= 0.5,
            }
        )
        d50, b50 = _get(direct, "latency_unloaded", "p50"), _get(bridged, "latency_unloaded", "p50")
        if d50 is not None and b50 is not None:
            limit = 2 * d50 + 0.1
            out.append(
                {
                    "goal": "small mail: bridged latency p50 <= 2 x direct + 100 ms",
                    "measured": f"{b50 * 1000:.0f} ms, limit {limit * 1000:.0f} ms (direct {d50 * 1000:.0f} ms)",
                    "met": b50 <= limit,
                }
            )
    large, raw = _get(r, "large", "bridged"), _get(r, "raw", "transfers", "default_first")
    if large and raw:
        q = ratio(large.get("mib_s"), raw.get("mib_s"))
        out.append(
            {
                "goal": "large mail: bridged >= 90% of raw toxcore (default loop) in the same run",
                "measured": f"{_f(large.get('mib_s'))} vs {_f(raw.get('mib_s'))} MiB/s = {_pct(q)}",
                "met": None if q is None else q >= 0.9,
            }
        )
    catch = r.get("catchup")
    if catch and catch.get("catch_up_s") is not None:
        again = catch.get("deferred_again") or 0
        out.append(
            {
                "goal": f"catch-up: {catch['mails']} mails <= 5 s after the friend connection",
                "measured": f"{catch['catch_up_s']:.2f} s"
                + (" (mails missing)" if catch.get("missing") else "")
                + (
                    f"; {again} deferred again (flushed by the bench), the other {catch['first_try_mails']} "
                    f"in {_f(catch.get('first_try_catch_up_s'))} s"
                    if again
                    else ""
                ),
                "met": catch["catch_up_s"] <= CATCH_UP_LIMIT and not catch.get("missing"),
            }
        )
    idle = r.get("memory_idle")
    if idle:
        worst = max(v["rss"] for v in idle.values())
        ident = next(iter(idle.values()))["identities"]
        out.append(
            {
                "goal": f"memory: RSS <= 80 MB idle with {ident} identities",
                "measured": ", ".join(f"{k} {v['rss'] / MIB:.1f} MiB" for k, v in idle.items()),
                "met": worst <= IDLE_RSS_LIMIT,
            }
        )
    if large and large.get("memory"):
        size = large["size"]
        costs = {k: (v["peak_during"] or 0) - (v["rss_before"] or 0) for k, v in large["memory"].items()}
        out.append(
            {
                "goal": f"memory: a {size / MIB:.0f} MiB mail costs <= 3x its size at peak",
                "measured": ", ".join(f"{k} +{c / MIB:.1f} MiB = {c / size:.2f}x" for k, c in costs.items()),
                "met": max(costs.values()) <= LARGE_COST_FACTOR * size,
            }
        )
    return out


def table(r: dict) -> str:
    m = r.get("machine", {})
    p = r.get("params", {})
    lines = [
        f"toxbridge bench, {m.get('date', '')}: {m.get('cpu', '?')}, {m.get('cores')} cores, "
        f"{m.get('memory_gib')} GiB, {m.get('kernel', '')}",
        f"Python {m.get('python')}, toxcore {m.get('toxcore')}, Postfix {m.get('postfix')}, "
        f"Dovecot {m.get('dovecot', '').split(' ')[0]}; load average before {_load(m.get('load_before'))}, "
        f"after {_load(m.get('load_after'))}; toxbridge {m.get('commit')}"
        f"{' + uncommitted changes' if m.get('uncommitted') else ''}",
        f"mail bodies: {p.get('body', 'line')}; bridges' compression: {p.get('compression', 'off')}",
        "",
    ]
    rows: list[tuple[str, str, str, str]] = []
    direct, bridged = _get(r, "small", "direct"), _get(r, "small", "bridged")
    if direct and bridged:
        size_kb = direct["size"] // 1024
        rows.append(
            (
                f"small mail {size_kb} KB, burst of {p.get('small')} over {direct['sessions']} SMTP sessions",
                "direct",
                "bridged",
                "bridged/direct",
            )
        )
        d, b = direct["burst"], bridged["burst"]
        rows.append(
            (
                "  throughput, msg/s",
                _f(d.get("throughput_msg_s"), 1),
                _f(b.get("throughput_msg_s"), 1),
                _f(ratio(b.get("throughput_msg_s"), d.get("throughput_msg_s")), 2),
            )
        )
        for label, key in (("latency p50, one at a time", "p50"), ("latency p95, one at a time", "p95")):
            dv, bv = _get(direct, "latency_unloaded", key), _get(bridged, "latency_unloaded", key)
            rows.append((f"  {label}, ms", _ms(dv), _ms(bv), _f(ratio(bv, dv), 1)))
        for label, key in (("latency p50 in the burst", "p50"), ("latency p95 in the burst", "p95")):
            dv, bv = _get(d, "latency_loaded", key), _get(b, "latency_loaded", key)
            rows.append((f"  {label}, ms", _ms(dv), _ms(bv), _f(ratio(bv, dv), 1)))
        rows.append(
            ("  deferred by the bridge (4xx) in the burst", "-", str(b.get("deferred_by_bridge", 0)), "")
        )
        rows.append(
            (
                "  throughput of the mails not deferred, msg/s",
                _f(d.get("first_try_throughput_msg_s"), 1),
                _f(b.get("first_try_throughput_msg_s"), 1),
                _f(ratio(b.get("first_try_throughput_msg_s"), d.get("first_try_throughput_msg_s")), 2),
            )
        )
        cpu = bridged.get("cpu") or {}
        idle = r.get("memory_idle") or {}
        per_mail = []
        for side in ("src_bridge", "dst_bridge"):
            used = cpu.get(f"{side}_cpu_s")
            if used is None:
                per_mail.append("-")
                continue
            used -= _get(idle, side, "idle_cpu_share", default=0) * cpu.get("wall_s", 0)
            per_mail.append(f"{used / b['mails'] * 1000:.1f}")
        rows.append(("  bridge CPU per mail beyond idle, ms: src / dst", "", " / ".join(per_mail), ""))
        rows.append(
            (
                "  machine busy during the burst (2 cores = 100%)",
                _pct(_get(direct, "cpu", "machine_busy_share")),
                _pct(cpu.get("machine_busy_share")),
                "",
            )
        )
        rows.append(
            (
                "  UDP datagrams in / dropped (receive buffer full)",
                "",
                f"{_get(cpu, 'udp', 'InDatagrams', default='-')} / {_get(cpu, 'udp', 'RcvbufErrors', default='-')}",
                "",
            )
        )
        leg, rx = _get(bridged, "stages", "dovecot_leg"), _get(bridged, "stages", "receiving_bridge")
        if rx and rx.get("files"):
            rows.append(
                (
                    "  (--stages) dst: offer -> complete / -> removed, mean ms",
                    "",
                    f"{_ms(_get(rx, 'offer_to_complete_s', 'mean'), 1)} / "
                    f"{_ms(_get(rx, 'complete_to_removed_s', 'mean'), 1)}",
                    "",
                )
            )
        if leg and leg.get("mails"):
            rows.append(
                (
                    "  (--stages) dst -> Dovecot: dialogue / delivery, mean ms; Dovecot busy",
                    "",
                    f"{_ms(_get(leg, 'mail_to_message_s', 'mean'), 1)} / "
                    f"{_ms(_get(leg, 'message_end_to_250_s', 'mean'), 1)}; {_pct(leg.get('mean_in_flight'))}",
                    "",
                )
            )
        for key, label in (
            ("dedup", "Dovecot LMTP alone as the bridge delivers, msg/s"),
            ("plain", "  same without X-Toxbridge-Id (no dedup lookup), msg/s"),
        ):
            dove = _get(r, "small", "dovecot", key)
            if dove:
                rows.append(
                    (
                        f"  {label}",
                        "",
                        _f(dove.get("throughput_msg_s"), 1),
                        _f(ratio(b.get("throughput_msg_s"), dove.get("throughput_msg_s")), 2),
                    )
                )
        for key, label in (
            ("cold_4", "raw toxcore, 10 KB files answered, 4 in flight, cold link"),
            ("default_4", "raw toxcore, same on the warm link, default loop"),
            ("fast_4", "raw toxcore, same, busy loop"),
            ("bridge_4", "raw toxcore, same, the bridge's ToxNode loop"),
            ("default_16", "raw toxcore, same, default loop, 16 in flight"),
        ):
            raw_small = _get(r, "raw", "small", key)
            if raw_small:
                rows.append(
                    (
                        f"  {label}, files/s",
                        "",
                        _f(raw_small["files_s"], 1),
                        _f(ratio(b.get("throughput_msg_s"), raw_small["files_s"]), 2),
                    )
                )
        poll = _get(bridged, "poll", "mean_period_s")
        rows.append(
            ("  (IMAP poll period, ms)", _ms(_get(direct, "poll", "mean_period_s"), 1), _ms(poll, 1), "")
        )
    large = _get(r, "large", "bridged")
    transfers = _get(r, "raw", "transfers") or {}
    if large:
        rows.append((f"large mail {large['size'] / MIB:.0f} MiB", "seconds", "MiB/s", "bridged/this"))
        rows.append(
            (
                "  bridged, SMTP accepted -> IMAP",
                _f(large.get("accepted_to_visible_s")),
                _f(large.get("mib_s")),
                "",
            )
        )
        for key, label in (
            ("default_first", "raw toxcore, default loop, link as cold"),
            ("default_again", "raw toxcore, default loop, again (warm)"),
            ("fast_warm", "raw toxcore, busy loop, warm"),
            ("default_after_idle", "raw toxcore, default loop, after 10 s idle"),
        ):
            t = transfers.get(key)
            if t:
                rows.append(
                    (
                        f"  {label}",
                        _f(t["seconds"]),
                        _f(t["mib_s"]),
                        _f(ratio(large.get("mib_s"), t["mib_s"]), 2),
                    )
                )
        direct_large = _get(r, "large", "direct", "postfix")
        if direct_large and direct_large.get("accepted_to_visible_s"):
            rows.append(
                (
                    "  direct (Postfix -> Dovecot), accepted -> IMAP",
                    _f(direct_large["accepted_to_visible_s"]),
                    _f(direct_large.get("mib_s")),
                    "",
                )
            )
        rows.append(
            (
                "  UDP datagrams in / dropped during the bridged mail",
                "",
                f"{_get(large, 'cpu', 'udp', 'InDatagrams', default='-')} / "
                f"{_get(large, 'cpu', 'udp', 'RcvbufErrors', default='-')}",
                "",
            )
        )
        stages = large.get("stages_s", {})
        rows.append(
            (
                "  bridged stages, s: Postfix->offer / Tox / receiver->Dovecot",
                _f(stages.get("postfix_to_offer")),
                _f(stages.get("tox_transfer")),
                _f(stages.get("receiver_after_transfer")),
            )
        )
    catch = r.get("catchup")
    if catch:
        rows.append((f"catch-up, {catch['mails']} deferred mails", "seconds", "", ""))
        rows.append(("  friend connection -> last in IMAP", _f(catch.get("catch_up_s")), "", ""))
        rows.append(
            ("  friend connection -> first in IMAP", _f(catch.get("first_visible_after_online_s")), "", "")
        )
        rows.append(
            (
                "  deferred again by the bridge (flushed by the bench)",
                str(catch.get("deferred_again", 0)),
                "",
                "",
            )
        )
        rows.append(
            (
                "  friend connection -> last of the others in IMAP",
                _f(catch.get("first_try_catch_up_s")),
                "",
                "",
            )
        )
    idle = r.get("memory_idle")
    if idle:
        ident = next(iter(idle.values()))["identities"]
        rows.append((f"memory, bridge with {ident} identities, MiB", "src (sends)", "dst (receives)", ""))
        rows.append(
            ("  RSS idle", _mib(_get(idle, "src_bridge", "rss")), _mib(_get(idle, "dst_bridge", "rss")), "")
        )
        rows.append(
            (
                "  CPU idle (iterate loops), % of a core",
                _pct(_get(idle, "src_bridge", "idle_cpu_share")),
                _pct(_get(idle, "dst_bridge", "idle_cpu_share")),
                "",
            )
        )
    if large and large.get("memory"):
        mem = large["memory"]
        rows.append(
            (
                f"  peak with the {large['size'] / MIB:.0f} MiB mail",
                _mib(_get(mem, "src_bridge", "peak_during")),
                _mib(_get(mem, "dst_bridge", "peak_during")),
                "",
            )
        )
        rows.append(
            (
                "  peak - RSS before, x mail size",
                _x(mem.get("src_bridge"), large["size"]),
                _x(mem.get("dst_bridge"), large["size"]),
                "",
            )
        )
    start = r.get("startup")
    if start:
        rows.append(("start-up, both bridges started together", "seconds", "", ""))
        rows.append(
            (
                "  -> Tox network joined (both)",
                _f(max(start["src_network_s"], start["dst_network_s"])),
                "",
                "",
            )
        )
        rows.append(("  -> friend connection (both sides)", _f(start["friend_connection_s"]), "", ""))
        rows.append(("  -> greetings exchanged (mail flows)", _f(start["greeting_s"]), "", ""))
    width = max((len(row[0]) for row in rows), default=10)
    for row in rows:
        lines.append(f"{row[0]:<{width}}  {row[1]:>12}  {row[2]:>14}  {row[3]:>14}".rstrip())
    shapes = [
        (label, counts)
        for label, counts in (
            ("direct", _get(r, "small", "direct", "burst", "per_second")),
            ("bridged", _get(r, "small", "bridged", "burst", "per_second")),
            ("raw toxcore, cold link", _get(r, "raw", "small", "cold_4", "per_second")),
        )
        if counts
    ]
    if shapes:
        lines += ["", "small-mail bursts, arrivals in each second:"]
        lines += [f"  {label + ':':<24}{' '.join(map(str, counts))}" for label, counts in shapes]
    verdicts = r.get("goals") or goals(r)
    if verdicts:
        lines += ["", "goals (issue 6):"]
        for g in verdicts:
            mark = {True: "met    ", False: "NOT MET", None: "?      "}[g["met"]]
            lines.append(f"  {mark}  {g['goal']}: {g['measured']}")
    if r.get("errors"):
        lines += ["", "errors:"] + [
            f"  {phase}: {err.splitlines()[-1] if err else ''}" for phase, err in r["errors"].items()
        ]
    return "\n".join(lines)


def _f(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ms(v, digits: int = 0) -> str:
    return "-" if v is None else f"{v * 1000:.{digits}f}"


def _mib(v) -> str:
    return "-" if v is None else f"{v / MIB:.1f}"


def _pct(q) -> str:
    return "-" if q is None else f"{q * 100:.0f}%"


def _x(mem: dict | None, size: int) -> str:
    if not mem or mem.get("peak_during") is None or mem.get("rss_before") is None:
        return "-"
    cost = mem["peak_during"] - mem["rss_before"]
    return f"+{cost / MIB:.0f} = {cost / size:.2f}x"


def _load(v) -> str:
    return "-" if not v else "/".join(f"{x:.2f}" for x in v)
