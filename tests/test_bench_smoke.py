"""A short run of `make bench` (python -m bench.run --smoke): 5 small mails each way, a 1 MiB mail
bridged, idle memory. It checks that the harness works end to end, not the goals' numbers."""

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
        timeout=240,
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
    report(
        f"bench smoke: bridged {results['small']['bridged']['burst']['throughput_msg_s']:.0f} msg/s, "
        f"1 MiB at {large['mib_s']:.2f} MiB/s, in {results['total_s']:.0f} s"
    )
