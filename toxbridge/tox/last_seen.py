"""When each friend was last online, kept beside the profile for friends the bridge re-added.

toxcore keeps a friend's last-online time in the profile, and forgets it when the friend is
deleted: the re-add of an offline friend (tox/friend_search.py) would leave a friend away since
last week "never online" — in the deferral text Postfix bounces with, and for the next start's
search, which re-adds only friends that were online once. So the bridge writes down the time it
knew before the re-add, in `profiles/<mailbox>.seen.json` ({"<key hex>": unix time}).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..files import replace_file

log = logging.getLogger("toxbridge.identity")


def seen_path(profile: Path) -> Path:
    return profile.with_name(profile.stem + ".seen.json")


class LastSeen:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._times: dict[str, float] = {}
        try:
            data = json.loads(path.read_text())
            self._times = {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as e:  # a damaged file costs only these times
            log.warning("%s unreadable (%s): last-online times of re-added friends forgotten", path, e)

    def get(self, public_key: bytes) -> float | None:
        return self._times.get(public_key.hex())

    def keep(self, public_key: bytes, when: float) -> None:
        """Remember `when` for the friend, on disk at once (a change only: re-adds repeat)."""
        key = public_key.hex()
        if self._times.get(key, 0) >= when:
            return
        self._times[key] = when
        try:
            replace_file(self.path, json.dumps(self._times, sort_keys=True).encode(), 0o600)
        except OSError as e:
            log.warning("cannot keep last-online times in %s: %s", self.path, e)
