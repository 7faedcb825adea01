"""Raw toxcore file transfer between two bare ToxNode processes (bench/rawtox_peer.py).

The pair starts at the beginning of the bench (its friend connection takes ~10 s, like the
bridges') and idles until the large-mail phase is over. Then (after the cold small burst below)
the same bytes as the bridged large mail cross as plain transfers, one after the other on the
same link:

  default, first   toxcore's default loop, the first large transfer, on a link idle for
                   IDLE_PAUSE seconds since the cold small burst (the reference: the bridged
                   mail too follows small bursts and a pause);
  default, again   the same loop right after it (the link is warm);
  fast, warm       iterate without sleeping while the transfer runs;
  default, idle    the default loop again after the link was idle for IDLE_PAUSE seconds
                   (does the warmth last? a bridge sends mail now and then, not back to back).

A transfer's time is from tox_file_send on the sender to the last chunk on the receiver.

Small transfers the way mails cross: N transfers of the small-mail size, K in flight, each
answered by the receiver with a lossless packet when complete, the answer letting the next one
start (a mail waits for the peer bridge's result). This is what the Tox transport alone does for
small mail, without Postfix, Dovecot or the bridge's own work. One such burst runs first, before
the large transfers, on a link as cold as the one the bridged burst met (toxcore's congestion
control starts a connection's send rate low and raises it by at most 1.2x the rate actually sent
over the last 600 ms, so a link speeds up over seconds of traffic and slows down again when idle);
the others run after the large transfers, on a warm link.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from .stats import MIB, per_second, summary

REPO = Path(__file__).resolve().parents[1]
IDLE_PAUSE = 10.0


class RawPeer:
    def __init__(self, name: str, bootstrap: tuple[str, int, bytes], log_path: Path) -> None:
        self.name = name
        host, port, key = bootstrap
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.rawtox_peer", "--bootstrap", f"{host}:{port}:{key.hex()}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO,
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue = queue.Queue()
        self.history: list[dict] = []
        threading.Thread(target=self._read, name=f"rawpeer-{name}", daemon=True).start()
        self.address = self.wait("ready", 30)["address"]

    def _read(self) -> None:
        assert self.proc.stdout is not None  # stdout=PIPE
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                continue
        self.events.put({"event": "exit"})

    def send(self, **cmd) -> None:
        assert self.proc.stdin is not None  # stdin=PIPE
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, event: str, timeout: float, predicate=lambda e: True) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"raw peer {self.name}: no {event!r} event within {timeout}s")
            try:
                got = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.history.append(got)
            if got.get("event") == "exit":
                raise RuntimeError(f"raw peer {self.name} exited (rc={self.proc.poll()})")
            if got.get("event") == event and predicate(got):
                return got

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class RawPair:
    """Sender and receiver; `start()` returns at once, `wait_connected()` blocks."""

    def __init__(self, root: Path, bootstrap: tuple[str, int, bytes]) -> None:
        self.root, self.bootstrap = Path(root), bootstrap
        self.sender: RawPeer | None = None
        self.receiver: RawPeer | None = None
        self.started_at: float | None = None
        self.connected_s: float | None = None

    def start(self) -> RawPair:
        self.root.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        self.receiver = RawPeer("receiver", self.bootstrap, self.root / "receiver.log")
        self.sender = RawPeer("sender", self.bootstrap, self.root / "sender.log")
        self.sender.send(cmd="befriend", address=self.receiver.address)
        return self

    def _peers(self) -> tuple[RawPeer, RawPeer]:
        """(sender, receiver), once start() has made them."""
        assert self.sender is not None and self.receiver is not None, "start() first"
        return self.sender, self.receiver

    def wait_connected(self, timeout: float = 120) -> None:
        def online(e):
            return e["status"] != 0

        sender, receiver = self._peers()
        assert self.started_at is not None
        sender.wait("friend", timeout, online)
        got = receiver.wait("friend", timeout, online)
        self.connected_s = got["t"] - self.started_at

    def transfer(self, path: Path, mode: str, bench_id: int, sha256: str, timeout: float = 300) -> dict:
        sender, receiver = self._peers()
        for peer in (sender, receiver):
            peer.send(cmd="mode", mode=mode)
        time.sleep(0.2)  # the mode commands are read on another thread: let them land first
        sender.send(cmd="send", id=bench_id, path=str(path))
        offered = sender.wait("offered", 30, lambda e: e["id"] == bench_id)
        got = receiver.wait("received", timeout)
        sent = sender.wait("sent_all", 30, lambda e: e["id"] == bench_id)
        seconds = got["t_done"] - offered["t"]
        return {
            "mode": mode,
            "size": got["size"],
            "seconds": seconds,
            "mib_s": got["size"] / MIB / seconds,
            "offer_to_first_byte_s": got["t_first"] - offered["t"],
            "first_to_last_byte_s": got["t_done"] - got["t_first"],
            "intact": got["sha256"] == sha256,
            "chunks": sent["chunks"],
            "sender_iterations": sent["iterations"],
            "receiver_iterations": got["iterations"],
        }

    def burst(self, mode: str, count: int, size: int, inflight: int, timeout: float = 120) -> dict:
        sender, receiver = self._peers()
        for peer in (sender, receiver):
            peer.send(cmd="mode", mode=mode)
        time.sleep(0.2)
        sender.send(cmd="burst", count=count, size=size, inflight=inflight)
        done = sender.wait("burst_done", timeout)
        return {
            "mode": mode,
            "count": done["count"],
            "size": size,
            "inflight": inflight,
            "seconds": done["seconds"],
            "files_s": done["count"] / done["seconds"],
            "latency": summary(done["latencies"]),
            "per_second": per_second(done.get("answered", []), 0.0),
        }

    def stop(self) -> None:
        for peer in (self.sender, self.receiver):
            if peer is not None:
                peer.stop()


def run(
    pair: RawPair,
    payload: bytes,
    workdir: Path,
    small_count: int = 200,
    small_size: int = 10 * 1024,
    preamble: int = 25,
    log=print,
) -> dict:
    import hashlib

    path = Path(workdir) / "raw-payload.bin"
    path.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    pair.wait_connected()
    out: dict = {"friend_connection_s": pair.connected_s, "transfers": {}, "small": {}}
    if small_count:
        # First, on the link as the bridged burst found its own: idle since the friend connection
        # but for `preamble` files one at a time (the bridged path's warm-up and latency mails).
        pair.burst("bridge", preamble, small_size, 1)
        result = pair.burst("bridge", small_count, small_size, 4)
        out["small"]["cold_4"] = result
        log(
            f"  raw small cold_4: {small_count} x {small_size} B in {result['seconds']:.2f} s = "
            f"{result['files_s']:.1f} files/s; per second {result['per_second']}"
        )
        time.sleep(IDLE_PAUSE)  # the large transfer below is to meet a cold link again
    for key, mode in (
        ("default_first", "default"),
        ("default_again", "default"),
        ("fast_warm", "fast"),
        ("default_after_idle", "default"),
    ):
        if key == "default_after_idle":
            time.sleep(IDLE_PAUSE)
        result = pair.transfer(path, mode, len(out["transfers"]) + 1, digest)
        out["transfers"][key] = result
        log(
            f"  raw {key}: {result['seconds']:.2f} s = {result['mib_s']:.2f} MiB/s"
            f"{'' if result['intact'] else ' (BYTES DIFFER)'}"
        )
    path.unlink(missing_ok=True)
    if small_count:
        for key, mode, inflight in (
            ("default_4", "default", 4),
            ("fast_4", "fast", 4),
            ("bridge_4", "bridge", 4),
            ("default_16", "default", 16),
        ):
            result = pair.burst(mode, small_count, small_size, inflight)
            out["small"][key] = result
            log(
                f"  raw small {key}: {small_count} x {small_size} B in {result['seconds']:.2f} s = "
                f"{result['files_s']:.1f} files/s, answered after p50 {result['latency']['p50'] * 1000:.0f} ms"
            )
    return out
