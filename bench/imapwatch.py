"""When does a mail become visible in IMAP? One IMAP session polling one INBOX.

A thread keeps one session on the mailbox (EXAMINE, read-only) and sends NOOP every `interval`
seconds; Dovecot syncs the mailbox on NOOP and reports new messages with EXISTS. New messages'
X-Bench-Id headers are then fetched (UID FETCH n:*, header field only), and each id is stamped
with the moment the NOOP that first showed it was answered. A mail is therefore seen at most one
poll period (interval + NOOP round trip; the mean is reported) after Dovecot made it visible.
"""

from __future__ import annotations

import imaplib
import re
import threading
import time

_UID = re.compile(rb"UID (\d+)")
_BENCH_ID = re.compile(rb"X-Bench-Id:\s*(\S+)", re.IGNORECASE)


class ImapWatch:
    def __init__(self, port: int, user: str, password: str, interval: float = 0.005) -> None:
        self.port, self.user, self.password, self.interval = port, user, password, interval
        self.seen: dict[str, tuple[float, float]] = {}  # bench id -> (monotonic, wall) first seen
        self.polls = 0
        self.poll_first: float | None = None
        self.poll_last: float | None = None
        self.max_gap = 0.0
        self._imap: imaplib.IMAP4 | None = None
        self._last_uid = 0
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> ImapWatch:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        imap.login(self.user, self.password)
        typ, data = imap.select("INBOX", readonly=True)
        if typ != "OK":
            raise RuntimeError(f"EXAMINE INBOX: {data!r}")
        typ, data = imap.uid("SEARCH", "ALL")  # no charset
        uids = [int(u) for u in data[0].split()] if typ == "OK" and data and data[0] else []
        self._last_uid = max(uids, default=0)
        imap.untagged_responses.clear()
        self._imap = imap
        self._thread = threading.Thread(target=self._run, name=f"imapwatch-{self.user}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        imap = self._imap
        assert imap is not None, "start() opens the session before the thread"
        try:
            while not self._stop.is_set():
                imap.noop()
                now, wall = time.monotonic(), time.time()
                if self.poll_last is not None:
                    self.max_gap = max(self.max_gap, now - self.poll_last)
                else:
                    self.poll_first = now
                self.poll_last = now
                self.polls += 1
                if imap.untagged_responses.pop("EXISTS", None) is not None:
                    self._fetch_new(now, wall)
                imap.untagged_responses.clear()
                self._stop.wait(self.interval)
        except BaseException as e:  # reported by wait()/stop()
            self.error = e
            with self._changed:
                self._changed.notify_all()

    def _fetch_new(self, now: float, wall: float) -> None:
        assert self._imap is not None
        typ, data = self._imap.uid(
            "FETCH", f"{self._last_uid + 1}:*", "(UID BODY.PEEK[HEADER.FIELDS (X-BENCH-ID)])"
        )
        if typ != "OK":
            raise RuntimeError(f"UID FETCH: {data!r}")
        new = {}
        for part in data:
            if not isinstance(part, tuple):
                continue
            uid = _UID.search(part[0])
            if uid is None or int(uid.group(1)) <= self._last_uid:
                continue  # "n:*" answers the last message when there is nothing newer
            found = _BENCH_ID.search(part[1])
            new[int(uid.group(1))] = found.group(1).decode() if found else None
        if not new:
            return
        self._last_uid = max(new)
        with self._changed:
            for bench_id in new.values():
                if bench_id is not None and bench_id not in self.seen:
                    self.seen[bench_id] = (now, wall)
            self._changed.notify_all()

    def wait(self, ids, timeout: float) -> set[str]:
        """Wait until every id in `ids` is seen; returns the ids still missing (empty: all seen)."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self.error is not None:
                    raise RuntimeError(f"IMAP watcher failed: {self.error!r}")
                missing = wanted - self.seen.keys()
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self._changed.wait(min(left, 0.5))

    @property
    def mean_period(self) -> float | None:
        if self.polls < 2 or self.poll_first is None or self.poll_last is None:
            return None
        return (self.poll_last - self.poll_first) / (self.polls - 1)

    def resolution(self) -> dict:
        return {
            "interval_s": self.interval,
            "polls": self.polls,
            "mean_period_s": self.mean_period,
            "max_gap_s": self.max_gap,
        }

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._imap is not None:
            try:
                self._imap.logout()
            except (OSError, imaplib.IMAP4.error):
                pass
            self._imap = None

    def __enter__(self) -> ImapWatch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
