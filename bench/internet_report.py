"""The lab-internet section of the bench's table, and its verdict on the goals of issue 18:
bridged against ordinary e-mail (SMTP with STARTTLS between the same two Postfix servers) on the
same emulated links, in one run; and, on loopback, bridged against raw toxcore."""

from __future__ import annotations

from .report import _f, _get, _ms, _pct
from .stats import ratio

SMALL_SHARE = 0.80  # small-mail burst: bridged msg/s >= 80 % of ordinary e-mail's
LARGE_SHARE = 0.90  # large mail: bridged MiB/s >= 90 % of ordinary e-mail's
LATENCY_MARGIN = 0.100  # one-at-a-time latency: bridged <= ordinary + 100 ms
RECONNECT_P95 = 15.0  # friend reconnection after a restart, p95, seconds
RAW_SHARE = 0.95  # loopback: bridged >= 95 % of raw toxcore on the same link state


def _verdict(goal: str, measured: str, q: float | None, limit: float) -> dict:
    return {"goal": goal, "measured": measured, "met": None if q is None else q >= limit}


def goals(r: dict) -> list[dict]:
    """[{goal, measured, met}] of issue 18 for every part that ran."""
    out = []
    net = r.get("internet") or {}
    ordinary, bridged = _get(net, "small", "ordinary"), _get(net, "small", "bridged")
    if ordinary and bridged:
        o_tp, b_tp = _get(ordinary, "burst", "throughput_msg_s"), _get(bridged, "burst", "throughput_msg_s")
        q = ratio(b_tp, o_tp)
        out.append(
            _verdict(
                f"lab internet, small-mail burst: bridged msg/s >= {SMALL_SHARE:.0%} of ordinary e-mail",
                f"{_f(b_tp, 1)} vs {_f(o_tp, 1)} msg/s = {_pct(q)}",
                q,
                SMALL_SHARE,
            )
        )
        o50, b50 = _get(ordinary, "latency_unloaded", "p50"), _get(bridged, "latency_unloaded", "p50")
        if o50 is not None and b50 is not None:
            limit = o50 + LATENCY_MARGIN
            out.append(
                {
                    "goal": "lab internet, one at a time: bridged latency p50 <= ordinary e-mail's + 100 ms",
                    "measured": f"{b50 * 1000:.0f} ms, limit {limit * 1000:.0f} ms (ordinary {o50 * 1000:.0f} ms;"
                    " no delay on the links: no netem here)",
                    "met": b50 <= limit,
                }
            )
    o_large, b_large = _get(net, "large", "ordinary", "mib_s"), _get(net, "large", "bridged", "mib_s")
    if o_large and b_large:
        q = ratio(b_large, o_large)
        size = _get(net, "large", "bridged", "size", default=0) / 2**20
        out.append(
            _verdict(
                f"lab internet, {size:.0f} MiB mail: bridged >= {LARGE_SHARE:.0%} of ordinary e-mail's throughput",
                f"{_f(b_large)} vs {_f(o_large)} MiB/s = {_pct(q)}",
                q,
                LARGE_SHARE,
            )
        )
    p95 = _get(net, "reconnect", "p95")
    if p95 is not None:
        out.append(
            {
                "goal": f"friend reconnection after a restart: p95 <= {RECONNECT_P95:.0f} s",
                "measured": f"p95 {p95:.1f} s, p50 {_get(net, 'reconnect', 'p50'):.1f} s over "
                f"{_get(net, 'reconnect', 'restarts')} restarts",
                "met": p95 <= RECONNECT_P95,
            }
        )
    b_small, raw_small = (
        _get(r, "small", "bridged", "burst", "throughput_msg_s"),
        _get(r, "raw", "small", "cold_4", "files_s"),
    )
    if b_small and raw_small:
        q = ratio(b_small, raw_small)
        out.append(
            _verdict(
                f"loopback, small mails: bridged >= {RAW_SHARE:.0%} of raw toxcore on a link as cold",
                f"{_f(b_small, 1)} msg/s vs {_f(raw_small, 1)} files/s = {_pct(q)}",
                q,
                RAW_SHARE,
            )
        )
    b_big, raw_big = (
        _get(r, "large", "bridged", "mib_s"),
        _get(r, "raw", "transfers", "default_first", "mib_s"),
    )
    if b_big and raw_big:
        q = ratio(b_big, raw_big)
        out.append(
            _verdict(
                f"loopback, large mail: bridged >= {RAW_SHARE:.0%} of raw toxcore on a link as cold",
                f"{_f(b_big)} vs {_f(raw_big)} MiB/s = {_pct(q)}",
                q,
                RAW_SHARE,
            )
        )
    return out


def _pace(net: dict) -> str:
    kbit = (net.get("link_params") or {}).get("upload_limit_kbit")
    return f"{kbit} kbit/s" if kbit else "none (unpaced)"


def table(r: dict) -> str:
    """The lab-internet rows: ordinary e-mail, bridged, their ratio; then the goals of issue 18."""
    net = r.get("internet") or {}
    m = r.get("machine", {})
    lines = [
        f"lab internet (issue 18): {m.get('cores')} cores, {m.get('cpu')}",
        f"  links: each household {net.get('link', '?')}; no delay (this kernel has no netem);"
        f" STARTTLS sessions on the ordinary route: {net.get('tls_sessions', 0)}",
        f"  sending bridge's tox.upload_limit_kbit: {_pace(net)}",
        f"  DHT: {(net.get('link_params') or {}).get('dht_nodes', 1)} stable nodes (tox-bootstrapd)",
        "",
        f"{'':<44}  {'ordinary SMTP':>14}  {'bridged':>10}  {'ratio':>6}",
    ]

    def row(label: str, o, b, fmt, better_high: bool = True) -> None:
        q = ratio(b, o) if better_high else ratio(o, b)
        lines.append(f"{label:<44}  {fmt(o):>14}  {fmt(b):>10}  {_pct(q):>6}")

    small = net.get("small") or {}
    if small:
        o, b = small.get("ordinary", {}), small.get("bridged", {})
        row("small mails, burst, msg/s", _get(o, "burst", "throughput_msg_s"),
            _get(b, "burst", "throughput_msg_s"), lambda v: _f(v, 1))  # fmt: skip
        for p in ("p50", "p95"):
            row(f"small mails, one at a time, latency {p}, ms", _get(o, "latency_unloaded", p),
                _get(b, "latency_unloaded", p), _ms, better_high=False)  # fmt: skip
    large = net.get("large") or {}
    if large:
        size = _get(large, "bridged", "size", default=0) / 2**20
        row(f"{size:.0f} MiB mail, MiB/s (accepted -> IMAP)", _get(large, "ordinary", "mib_s"),
            _get(large, "bridged", "mib_s"), _f)  # fmt: skip
    rec = net.get("reconnect")
    if rec:
        lines.append(
            f"{'friend reconnection after restart, s':<44}  {'':>14}  "
            f"p50 {_f(rec.get('p50'), 1)}, p95 {_f(rec.get('p95'), 1)} ({rec.get('restarts')} restarts)"
        )
    verdicts = r.get("goals_internet") or goals(r)
    if verdicts:
        lines += ["", "goals (issue 18):"]
        for g in verdicts:
            mark = {True: "met    ", False: "NOT MET", None: "?      "}[g["met"]]
            lines.append(f"  {mark}  {g['goal']}: {g['measured']}")
    return "\n".join(lines)
