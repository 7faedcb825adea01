"""Friend reconnection after a restart, A/B: the re-add of offline friends (tox/friend_search.py)
on and off, alternating restarts in one run, on the lab internet.

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m bench.reconnect --restarts 20'

Bare ToxNodes (no Postfix, no Dovecot: only what toxcore does) with the options the bridge uses,
each in its household's namespace behind its own home router (50 Mbit/s down, 5 up, NAT): the
staying node in one, the restarted one in another, and two more friends of the staying node (one
whose router drops UDP, one with 2 % loss) so the DHT has the households the tests have. Each
restart: the node stops (tox_kill), starts again from its savedata on a fresh random port (as the
bridge does), bootstraps from the family's node, and the time from its start to its friend
connection is measured. `--arms off,5,3` says what alternates: "off" is toxcore alone; a number
is the lever with that re-add period (s): both sides run the bridge's policy (FriendSearch with
ToxNode.readd_friend), the staying side from the moment the friend went offline, the restarted
side from its start. Prints each time and p50/p95 per arm; a restart with no friend connection
within TIMEOUT counts as TIMEOUT.

`--dht-nodes 1,8` alternates as well between lab internets with that many stable DHT nodes
(tox-bootstrapd, Internet(dht_nodes=…)), all up at once, every node bootstrapping from all of
them. After each restart it prints whether the staying node fell off the Tox network and what
its savedata says of its onion's path nodes: how many belong to nodes gone (toxcore keeps a
ring of 32 and never drops a dead one, docs/facts.md).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path

from toxbridge.lab import netns
from toxbridge.lab.bootstrapd import LAB_DHT_SIZE
from toxbridge.lab.internet import Internet, Link
from toxbridge.lab.ports import free_port
from toxbridge.tox.friend_search import REFRESH_SECONDS, FriendSearch
from toxbridge.tox.node import ToxNode
from toxbridge.tox.options import ToxOptions

from .savedata import path_nodes
from .stats import percentile

HOME = Link(down_mbit=50, up_mbit=5)
SITES = {
    "stays": HOME,
    "restarts": HOME,
    "tcp-only": Link(down_mbit=50, up_mbit=5, drop_udp=True),
    "lossy": Link(down_mbit=50, up_mbit=5, loss=0.02),
}
TIMEOUT = 180.0
TICK = 1.0  # as the daemon asks (daemon.SEARCH_TICK_SECONDS)


class Side:
    """One node's friend events, and (lever on) the bridge's re-add policy for its friends."""

    def __init__(self, node: ToxNode, lever: bool, refresh: float = REFRESH_SECONDS) -> None:
        self.node, self.lever = node, lever
        self.search = FriendSearch(refresh)
        self.online: dict[bytes, float] = {}  # friend's key → when it came online
        self.readds = 0
        self.network: float | None = None  # when the node first got onto the Tox network
        self.is_online = False
        self.offline = 0  # how often the node fell off the Tox network after being on it
        node.handler = self
        if lever:
            self.search.joined([node.friend_public_key(f) for f in node.friends()], time.monotonic())

    def on_self_connection(self, node, status) -> None:
        if status and self.network is None:
            self.network = time.monotonic()
        if self.is_online and not status:
            self.offline += 1
        self.is_online = bool(status)

    def on_friend_request(self, node, public_key, message) -> None:
        node.friend_add_norequest(public_key)

    def on_friend_connection(self, node, friend, status) -> None:
        key = node.friend_public_key(friend)
        if status:
            self.online.setdefault(key, time.monotonic())
            self.search.found(key)
        else:
            self.online.pop(key, None)
            if self.lever:
                self.search.lost(key, time.monotonic())

    def tick(self) -> None:
        for key in self.search.due(time.monotonic()):
            friend = self.node.friend_by_public_key(key)
            if friend is not None and self.node.friend_connection(friend) == 0:
                self.readds += self.node.readd_friend(friend)


class Site:
    """A thread that lives in one household's namespace and runs that household's event loop."""

    def __init__(self, namespace: str) -> None:
        ready = threading.Event()

        def run() -> None:
            with netns.entered(namespace):
                self.loop = asyncio.new_event_loop()
                ready.set()
                self.loop.run_forever()

        threading.Thread(target=run, name=namespace, daemon=True).start()
        ready.wait()

    async def call(self, fn):
        async def inside():
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(inside(), self.loop))


class Lab:
    """One lab internet with `dht_nodes` stable DHT nodes and the four nodes of the bench on it."""

    def __init__(self, root: Path, dht_nodes: int) -> None:
        self.dht_nodes = dht_nodes
        self.net = Internet(root, dht_nodes=dht_nodes)
        self.dead_seen: set[bytes] = set()  # DHT keys of gone nodes seen in the staying node's ring

    async def start(self) -> Lab:
        self.net.start()
        self.sites = {name: Site(self.net.add_site(name, link).host_ns) for name, link in SITES.items()}
        self.stays = await self.node("stays")
        self.others = {
            name: await self.node(name, udp=name != "tcp-only") for name in ("restarts", "tcp-only", "lossy")
        }
        self.staying = Side(self.stays, lever=False)
        sides = {name: Side(node, lever=False) for name, node in self.others.items()}
        for name, node in self.others.items():
            await self.sites[name].call(lambda node=node: node.friend_add(self.stays.address, b"bench"))
        self.restarted = self.others["restarts"]
        await wait_for(lambda: self.stays.public_key in sides["restarts"].online, TIMEOUT)
        return self

    async def node(self, site: str, savedata: bytes | None = None, udp: bool = True) -> ToxNode:
        nodes = self.net.bootstrap_nodes()
        relays = [(n.host, n.tcp_port, n.public_key or b"") for n in self.net.nodes]
        first = free_port()

        def make() -> ToxNode:
            node = ToxNode(ToxOptions(udp=udp, start_port=first, end_port=first + 20), savedata)
            for host, port, key in nodes:  # as the bridge does with tox.bootstrap
                node.bootstrap(host, port, key)
            for host, port, key in relays:
                node.add_tcp_relay(host, port, key)
            node.start()
            return node

        return await self.sites[site].call(make)

    async def restart(self, refresh: float | None) -> float:
        """Restart the restarted node once; the seconds from its start to its friend connection."""
        stays, staying, sites = self.stays, self.staying, self.sites
        lever = refresh is not None
        staying.lever = lever  # from this loss on
        staying.search.refresh = refresh or REFRESH_SECONDS
        savedata = await sites["restarts"].call(self.restarted.savedata)
        await sites["restarts"].call(self.restarted.stop)
        started = time.monotonic()
        offline_before = staying.offline
        node = self.restarted = await self.node("restarts", savedata)
        side = await sites["restarts"].call(lambda: Side(node, lever, refresh or REFRESH_SECONDS))

        async def ticks() -> None:
            while True:
                await asyncio.sleep(TICK)
                await sites["restarts"].call(side.tick)
                await sites["stays"].call(staying.tick)

        name = f"dht {self.dht_nodes}, lever {arm_name(refresh)}"
        ticking = asyncio.ensure_future(ticks())
        try:
            await wait_for(lambda: stays.public_key in side.online, TIMEOUT)
            seconds = side.online[stays.public_key] - started
        except TimeoutError:  # counted as the timeout (toxcore alone once took longer)
            seconds = TIMEOUT
            print(f"{name}: no friend connection in {TIMEOUT:.0f} s", flush=True)
            await wait_for(lambda: stays.public_key in side.online, TIMEOUT)  # the next starts connected
        finally:
            ticking.cancel()
        network = f"{side.network - started:.1f} s" if side.network else "not yet"
        print(f"{name}: {seconds:5.1f} s (on the network after {network}; re-adds: restarted "
              f"{side.readds}, staying {staying.readds})", flush=True)  # fmt: skip
        staying.readds = 0
        await wait_for(lambda: node.public_key in staying.online, TIMEOUT)
        went = staying.offline - offline_before
        print(f"{name}: the staying node fell off the Tox network {went} times since this restart, "
              f"{'on it' if staying.is_online else 'OFF IT'} now; {await self.ring()}", flush=True)  # fmt: skip
        return seconds

    async def ring(self) -> str:
        """The staying node's onion path nodes as its savedata has them (the newest 8 of its ring
        of 32, onion_client.c), and how many are keys of nodes gone (restarted ones' old DHT keys)."""
        live = {node.public_key for node in self.net.nodes}
        for site, node in [("stays", self.stays), ("restarts", self.restarted)] + [
            (name, self.others[name]) for name in ("tcp-only", "lossy")
        ]:
            live.add(await self.sites[site].call(lambda node=node: node.dht_id))
        saved = path_nodes(await self.sites["stays"].call(self.stays.savedata))
        dead = [n.public_key for n in saved if n.public_key not in live]
        self.dead_seen.update(dead)
        return (
            f"staying node's saved path nodes: {len(dead)} of {len(saved)} dead; "
            f"dead keys seen in its ring so far: {len(self.dead_seen)}"
        )

    async def stop(self) -> None:
        try:
            await self.sites["restarts"].call(self.restarted.stop)
            await self.sites["stays"].call(self.stays.stop)
            for name in ("tcp-only", "lossy"):
                await self.sites[name].call(self.others[name].stop)
        finally:
            self.net.stop()


async def run(
    restarts: int, root: Path, arms: list[float | None], dht_nodes: list[int] | None = None
) -> dict[str, list[float]]:
    """`restarts` restarts in all, alternating over every (DHT size, lever arm) pair; one lab
    internet per DHT size, all up at once, so each arm's restarts are spread over the run."""
    sizes = dht_nodes or [1]
    pairs = [(size, arm) for size in sizes for arm in arms]
    times: dict[str, list[float]] = {pair_name(size, arm, sizes): [] for size, arm in pairs}
    labs: dict[int, Lab] = {}
    try:
        for size in sizes:
            labs[size] = Lab(root / f"dht-{size}", size)
            await labs[size].start()
        for i in range(restarts):
            size, arm = pairs[i % len(pairs)]
            times[pair_name(size, arm, sizes)].append(await labs[size].restart(arm))
        for size, lab in labs.items():
            print(f"dht {size}: the staying node went offline {lab.staying.offline} times in the run, "
                  f"{'online' if lab.staying.is_online else 'OFFLINE'} at the end", flush=True)  # fmt: skip
    finally:
        for lab in labs.values():
            await lab.stop()
    return times


def pair_name(size: int, refresh: float | None, sizes: list[int]) -> str:
    """The arm's name as the summary prints it; with one DHT size, the lever's alone (as before)."""
    lever = arm_name(refresh)
    return lever if len(sizes) == 1 else f"{lever} dht {size}"


def arm_name(refresh: float | None) -> str:
    return "off" if refresh is None else f"{refresh:g} s"


async def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("no friend connection")
        await asyncio.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument(
        "--arms",
        default=f"off,{REFRESH_SECONDS:g}",
        help="what alternates: off, or a re-add period in s (default: off,5)",
    )
    parser.add_argument(
        "--dht-nodes",
        default=str(LAB_DHT_SIZE),
        help="what else alternates: the lab internet's number of stable DHT nodes, e.g. 1,8 "
        f"(one lab internet each, all up at once; default: {LAB_DHT_SIZE})",
    )
    parser.add_argument("--root", type=Path, default=Path(f"/tmp/toxbridge-reconnect-{int(time.time())}"))
    args = parser.parse_args()
    arms = [None if a == "off" else float(a) for a in args.arms.split(",")]
    sizes = [int(n) for n in args.dht_nodes.split(",")]
    times = asyncio.run(run(args.restarts, args.root, arms, sizes))
    for arm, values in times.items():
        if values:
            print(f"lever {arm}: n={len(values)} p50 {percentile(values, 50):.1f} s, "
                  f"p95 {percentile(values, 95):.1f} s, max {max(values):.1f} s; "
                  f"all {', '.join(f'{v:.1f}' for v in sorted(values))}")  # fmt: skip


if __name__ == "__main__":
    main()
