"""Postfix's queue, seen from the bridge: find a friend's deferred mail and push it now.

Postfix backs off up to maximal_backoff_time (4000 s by default) between retries; when a friend
comes online the bridge asks for their deferred mail at once (`postqueue -j`, `postqueue -i ID`).
"""

from __future__ import annotations

import json
import logging
import subprocess

from .address import AddressError, parse_tox_address
from .config import PostfixQueue

log = logging.getLogger("toxbridge.postqueue")


def deferred_for(entries: list[dict], sender: str, public_key: bytes) -> list[str]:
    """Queue ids of deferred mail from `sender` with a recipient whose Tox key is `public_key`."""
    ids = []
    for entry in entries:
        if entry.get("queue_name") != "deferred" or str(entry.get("sender", "")).lower() != sender.lower():
            continue
        for rcpt in entry.get("recipients", []):
            try:
                if parse_tox_address(str(rcpt.get("address", ""))).public_key == public_key:
                    ids.append(str(entry["queue_id"]))
                    break
            except AddressError:
                continue
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


def push_deferred(postfix: PostfixQueue, sender: str, public_key: bytes) -> list[str]:
    """Blocking (run it in an executor): push the matching deferred mail; returns their ids."""
    base = [str(postfix.postqueue), "-c", str(postfix.config_dir)]
    listing = subprocess.run(base + ["-j"], capture_output=True, text=True, timeout=60)
    if listing.returncode != 0:
        raise OSError(f"postqueue -j failed: {listing.stderr.strip() or listing.returncode}")
    pushed = []
    for queue_id in deferred_for(parse_queue(listing.stdout), sender, public_key):
        done = subprocess.run(base + ["-i", queue_id], capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            pushed.append(queue_id)
        else:  # the mail may have left the queue meanwhile
            log.info("postqueue -i %s: %s", queue_id, done.stderr.strip())
    return pushed
