"""A short run of `make bench` (python -m bench.run --smoke): 5 small mails each way, a 1 MiB mail
bridged, idle memory; on the lab internet the same small mails and 1 MiB bridged and by ordinary
e-mail (SMTP with STARTTLS between the households' Postfix servers), one restart. It checks that
the harness works end to end, not the goals' numbers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def test_bench_smoke_run(tmp_path, report):
    if any(name != "lo" for _, name in socket.if_nameindex()):
        pytest.skip("the bench runs only where loopback is the only network (make test uses unshare -n)")
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["errors"] == {}
    for path in ("direct", "bridged"):
        small = results["small"][path]
        assert small["burst"]["missing"] == 0 and small["latency_unloaded"]["count"] == 2, small
        assert small["burst"]["throughput_msg_s"] > 0
        assert sum(small["burst"]["per_second"]) == small["burst"]["mails"], small["burst"]
    large = results["large"]["bridged"]
    assert large["missing"] == 0 and large["mib_s"] > 0
    assert large["size"] == 1024 * 1024
    for name in ("src_bridge", "dst_bridge"):
        assert results["memory_idle"][name]["rss"] > 10 * 1024 * 1024
        assert large["memory"][name]["peak_during"] >= large["memory"][name]["rss_before"]
    assert "goals (issue 6):" in results["table"] and "throughput, msg/s" in results["table"]
    net = results["internet"]
    for path in ("ordinary", "bridged"):
        small = net["small"][path]
        assert small["burst"]["missing"] == 0 and small["latency_unloaded"]["count"] == 2, small
        assert net["large"][path]["missing"] == 0 and net["large"][path]["size"] == 1024 * 1024
    assert net["tls_sessions"] > 0  # the ordinary route really was SMTP with STARTTLS
    assert net["reconnect"]["count"] == 1
    assert "goals (issue 18):" in results["table"] and "ordinary SMTP" in results["table"]
    assert {g["goal"].split(":")[0] for g in results["goals_internet"]} >= {
        "lab internet, small-mail burst",
        "friend reconnection after a restart",
    }
    report(
        f"bench smoke: bridged {results['small']['bridged']['burst']['throughput_msg_s']:.0f} msg/s, "
        f"1 MiB at {large['mib_s']:.2f} MiB/s; lab internet bridged "
        f"{net['small']['bridged']['burst']['throughput_msg_s']:.0f} vs ordinary "
        f"{net['small']['ordinary']['burst']['throughput_msg_s']:.0f} msg/s; in {results['total_s']:.0f} s"
    )
