"""Postfix's queue, seen from the bridge: find a friend's deferred mail and push it now.

Postfix backs off up to maximal_backoff_time (4000 s by default) between retries; when a friend
comes online the bridge asks for their deferred mail at once (`postqueue -j`, `postqueue -i ID`).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable

from ..config import PostfixQueue

log = logging.getLogger("toxbridge.postqueue")


def deferred_for(entries: list[dict], sender: str, recipient_matches: Callable[[str], bool]) -> list[str]:
    """Queue ids of deferred mail from `sender` with a recipient that leads to the friend."""
    ids = []
    for entry in entries:
        if entry.get("queue_name") != "deferred" or str(entry.get("sender", "")).lower() != sender.lower():
            continue
        if any(recipient_matches(str(rcpt.get("address", ""))) for rcpt in entry.get("recipients", [])):
            ids.append(str(entry["queue_id"]))
    return ids


def parse_queue(output: str) -> list[dict]:
    """`postqueue -j` prints one JSON object per line."""
    entries = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "queue_id" in entry:
            entries.append(entry)
    return entries


def list_queue(postfix: PostfixQueue) -> list[dict]:
    """Blocking (run it in an executor): `postqueue -j`."""
    listing = subprocess.run(_postqueue(postfix) + ["-j"], capture_output=True, text=True, timeout=60)
    if listing.returncode != 0:
        raise OSError(f"postqueue -j failed: {listing.stderr.strip() or listing.returncode}")
    return parse_queue(listing.stdout)


def push(postfix: PostfixQueue, queue_ids: list[str]) -> list[str]:
    """Blocking (run it in an executor): `postqueue -i` each; returns the ids pushed."""
    pushed = []
    for queue_id in queue_ids:
        done = subprocess.run(
            _postqueue(postfix) + ["-i", queue_id], capture_output=True, text=True, timeout=60
        )
        if done.returncode == 0:
            pushed.append(queue_id)
        else:  # the mail may have left the queue meanwhile
            log.info("postqueue -i %s: %s", queue_id, done.stderr.strip())
    return pushed


def _postqueue(postfix: PostfixQueue) -> list[str]:
    return [str(postfix.postqueue), "-c", str(postfix.config_dir)]
