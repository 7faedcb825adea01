"""The daemon's stop against systemd's: one deadline for the whole stop, below TimeoutStopSec in
deploy/systemd/toxbridge.service, and the toxcore nodes stopped before the SQLite files close.
Stand-ins for the outbound side and the identities; the real stop is in test_operations.py."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from toxbridge import daemon
from toxbridge.config import Config
from toxbridge.config import parse as parse_config
from toxbridge.contacts.roster import Roster
from toxbridge.outbound import Outbound
from toxbridge.tox.delivered import DeliveryStore
from toxbridge.tox.identity import Identity

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


class _JumpingLoop(asyncio.SelectorEventLoop):
    """A loop whose clock a stand-in can move on: a mail that used up its whole time."""

    offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset


class _Outbound:
    """A mail on its way that never finishes: drain uses all the time it is given."""

    def __init__(self) -> None:
        self.given: list[float] = []

    async def drain(self, timeout: float) -> int:
        self.given.append(timeout)
        loop = cast(_JumpingLoop, asyncio.get_running_loop())
        loop.offset += timeout
        # From here the stop has nothing left; whatever still waits is a test failure.
        task = asyncio.current_task()
        assert task is not None
        loop.call_later(5, task.cancel)
        return 1


class _Identity:
    """Deliveries to Dovecot that never end by themselves."""

    def __init__(self) -> None:
        self.cancelled = False

    async def stop(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def test_the_stop_keeps_one_deadline_for_mail_out_and_deliveries_in():
    outbound, identity = _Outbound(), _Identity()

    async def go():
        await daemon._stop_serving(
            20.0, cast(Outbound, outbound), [cast(Identity, identity)], []
        )  # test doubles, with only what the stop uses

    with asyncio.Runner(loop_factory=_JumpingLoop) as runner:
        runner.run(go())  # cancelled (a failure) if the deliveries are given time of their own
    assert outbound.given == [20.0]
    assert identity.cancelled  # they got what was left of the 20 s: nothing


def test_the_nodes_stop_before_the_store_closes():
    done: list[str] = []

    async def stop_node():
        done.append("node stopped")

    identity = SimpleNamespace(
        save=lambda: done.append("profile saved"), node=SimpleNamespace(running=True, stop=stop_node)
    )
    store = SimpleNamespace(close=lambda: done.append("store closed"))
    roster = SimpleNamespace(close=lambda: done.append("roster closed"))
    # test doubles, with only what _close uses
    asyncio.run(daemon._close([cast(Identity, identity)], cast(DeliveryStore, store), cast(Roster, roster)))
    assert done == ["profile saved", "node stopped", "store closed", "roster closed"]


def _seconds(value: str) -> float:
    """A systemd time span as the unit file writes it (30, 30s, 1min 30s)."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)\s*([a-z]*)", value))


def test_the_whole_stop_fits_in_systemds_stop_timeout():
    """systemd kills the bridge TimeoutStopSec after SIGTERM: stop_timeout, then the nodes and
    the files (daemon.CLOSE_SECONDS), must fit in it, for the default and the deployed config."""
    unit = (DEPLOY / "systemd" / "toxbridge.service").read_text()
    found = re.findall(r"^TimeoutStopSec=(.+)$", unit, re.M)
    assert len(found) == 1
    systemd_waits = _seconds(found[0])
    default = Config(state_dir=Path("/var/lib/toxbridge"), users=()).stop_timeout
    deployed = parse_config((DEPLOY / "toxbridge.yaml").read_text(), "toxbridge.yaml").stop_timeout
    for stop_timeout in (default, deployed):
        assert stop_timeout + daemon.CLOSE_SECONDS < systemd_waits
