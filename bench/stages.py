"""Where a bridged small mail spends its time at the receiving bridge (--stages, a diagnostic).

The receiving bridge writes each arriving mail to a partial file named after its payload hash:
created when the transfer is offered, full size when the last chunk is in (it is closed then),
removed after Dovecot answered and the delivery was recorded. A thread polls that directory every
`interval` seconds and stamps those three moments per file; with the LMTP proxy
(bench/lmtpproxy.py) in front of Dovecot this splits the receiving side into: the Tox transfer,
the Dovecot leg, and what is left (hash check, delivery record, scheduling).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from .stats import summary


class PartialFiles:
    def __init__(self, directory: Path, final_size: int | None = None, interval: float = 0.001) -> None:
        self.directory, self.final_size, self.interval = Path(directory), final_size, interval
        self.files: dict[str, dict] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="partial-files", daemon=True)

    def start(self) -> PartialFiles:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            present = {}
            try:
                with os.scandir(self.directory) as it:
                    for entry in it:
                        try:
                            present[entry.name] = entry.stat().st_size
                        except FileNotFoundError:
                            pass
            except FileNotFoundError:
                pass
            for name, size in present.items():
                f = self.files.setdefault(name, {"created": now, "size": 0})
                if size > f["size"]:
                    f["size"] = size
                    f["grew"] = now
            for name, f in self.files.items():
                if name not in present and "gone" not in f:
                    f["gone"] = now
            self.polls += 1
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        done = [f for f in self.files.values() if "gone" in f and "grew" in f]
        return {
            "files": len(done),
            "poll_interval_s": self.interval,
            # offer -> last bytes written (the file is closed, full size, when the transfer is complete)
            "offer_to_complete_s": summary([f["grew"] - f["created"] for f in done]),
            # complete -> removed: hash check, Dovecot's LMTP, the delivery record
            "complete_to_removed_s": summary([f["gone"] - f["grew"] for f in done]),
            "offer_to_removed_s": summary([f["gone"] - f["created"] for f in done]),
        }
