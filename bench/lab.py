"""The bench's own lab: a local tox-bootstrapd and two households on loopback.

src (user ann) sends, dst (user ben) receives over Tox; dst's mailbox `direct` takes the direct
path (dst's own Postfix → dst's Dovecot), so both paths end in the same Dovecot. Each bridge
serves `identities` Tox identities (ann/ben plus idle ones without mailboxes), as a household
with several members would. src's Postfix backs off for half an hour, so a deferred mail that
arrives within the bench was pushed by the bridge's catch-up, not by Postfix's own retry.
"""

from __future__ import annotations

import datetime
import re
import threading
import time
from pathlib import Path

from toxbridge.lab.bootstrapd import BootstrapNode
from toxbridge.lab.household import Household, befriend_all
from toxbridge.lab.ports import free_port, wait_until

from .lmtpproxy import LmtpProxy

SLOW_POSTFIX = {"minimal_backoff_time": "1800s", "maximal_backoff_time": "3600s", "queue_run_delay": "1800s"}
FRIENDS_TIMEOUT = 120.0
# A mail whose answer never comes is deferred after result_timeout (120 s by default); 20 s is
# plenty on loopback (a 25 MiB mail's answer follows its delivery within milliseconds) and keeps
# a lost answer from holding the bench for two minutes.
SRC_BRIDGE = {"result_timeout": 20}


def log_times(home: Household, pattern: str, since: int = 0) -> list[float]:
    """Wall-clock times of the bridge log lines after byte `since` that match `pattern` (regex)."""
    with open(home.bridge_log, "rb") as log:
        log.seek(since)
        text = log.read().decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        if re.search(pattern, line):
            try:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            except ValueError:
                continue
            out.append(stamp.timestamp())
    return out


def log_lines(home: Household, pattern: str, since: int = 0) -> list[str]:
    with open(home.bridge_log, "rb") as log:
        log.seek(since)
        text = log.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if re.search(pattern, line)]


def wait_log_time(home: Household, pattern: str, since: int, timeout: float) -> float:
    """Wall-clock time of the first matching log line after `since`, waiting for it."""
    found: list[float] = []

    def seen() -> bool:
        found[:] = log_times(home, pattern, since)
        return bool(found)

    if not wait_until(seen, timeout, interval=0.05):
        raise TimeoutError(f"{home.name}: no log line /{pattern}/ within {timeout}s")
    return found[0]


class BenchLab:
    def __init__(
        self,
        root: Path,
        identities: int = 5,
        bridge_concurrency: int | None = None,
        lmtp_proxy: bool = False,
        compression: bool = True,
    ) -> None:
        self.root = Path(root)
        self.tox_settings = {"compression": compression}
        self.identities = identities
        # dst's bridge delivers through a timestamping proxy (bench/lmtpproxy.py): a diagnostic
        self.lmtp_proxy = LmtpProxy() if lmtp_proxy else None
        # None: deploy/postfix/main.cf.toxbridge's toxbridge_destination_concurrency_limit
        self.bridge_concurrency = bridge_concurrency
        self.node = BootstrapNode(self.root / "bootstrapd", free_port(), free_port())
        self.src: Household | None = None
        self.dst: Household | None = None
        self.setup_seconds: dict[str, float] = {}

    @property
    def bootstrap(self) -> list[tuple[str, int, bytes]]:
        assert self.node.public_key is not None, "start_node() first"
        return [(self.node.host, self.node.port, self.node.public_key)]

    def start_node(self) -> None:
        if self.node.public_key is None:
            self.node.start()

    def start(self) -> None:
        t0 = time.monotonic()
        self.start_node()
        extra = max(0, self.identities - 1)
        self.src = Household(
            self.root,
            "src",
            {"ann": "ann-pw"},
            self.bootstrap,
            bridge_users=["ann"] + [f"ann{i}" for i in range(2, extra + 2)],
            postfix_extra={
                **SLOW_POSTFIX,
                **(
                    {"toxbridge_destination_concurrency_limit": str(self.bridge_concurrency)}
                    if self.bridge_concurrency
                    else {}
                ),
            },
            bridge_settings=SRC_BRIDGE,
            tox_settings=self.tox_settings,
        )
        self.dst = Household(
            self.root,
            "dst",
            {"ben": "ben-pw", "direct": "direct-pw"},
            self.bootstrap,
            bridge_users=["ben"] + [f"ben{i}" for i in range(2, extra + 2)],
            bridge_settings={"dovecot_lmtp": f"127.0.0.1:{self.lmtp_proxy.port}"}
            if self.lmtp_proxy
            else None,
            tox_settings=self.tox_settings,
        )
        if self.lmtp_proxy:
            self.lmtp_proxy.upstream = self.dst.dovecot.lmtp_port
        _parallel([self.src.start, self.dst.start])
        self.setup_seconds["households"] = time.monotonic() - t0
        befriend_all(self.src, "ann", [(self.dst, "ben")], timeout=FRIENDS_TIMEOUT)
        self.setup_seconds["friends"] = time.monotonic() - t0
        # The mail that carried the friend request is pushed by the catch-up; wait for it so
        # that no old mail crosses during a measurement.
        if not wait_until(lambda: not self.src.postfix.queue(), 60, interval=0.2):
            self.src.postfix.flush()
            self.src.postfix.wait_queue_empty(60)
        self.setup_seconds["ready"] = time.monotonic() - t0

    def homes(self) -> tuple[Household, Household]:
        """(src, dst), once start() has made them."""
        assert self.src is not None and self.dst is not None, "start() first"
        return self.src, self.dst

    @property
    def ann_key(self) -> str:
        return self.homes()[0].tox_ids["ann"][:8].lower()

    @property
    def ben_key(self) -> str:
        return self.homes()[1].tox_ids["ben"][:8].lower()

    def pids(self) -> dict[str, int]:
        src, dst = self.homes()
        assert src.bridge_pid is not None and dst.bridge_pid is not None, "both bridges run"
        return {"src_bridge": src.bridge_pid, "dst_bridge": dst.bridge_pid}

    def stop(self) -> None:
        homes = [h for h in (self.src, self.dst) if h is not None]
        _parallel([h.stop for h in homes])
        self.node.stop()
        if self.lmtp_proxy:
            self.lmtp_proxy.close()


def _parallel(steps) -> None:
    """Run independent blocking steps in threads; re-raise the first failure."""
    errors: list[BaseException] = []

    def run(step) -> None:
        try:
            step()
        except BaseException as e:  # noqa: BLE001 — collected and re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
