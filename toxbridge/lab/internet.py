"""A lab internet: home routers, slow uplinks, lossy links, a firewall that drops UDP.

Built from network namespaces inside the loopback-only namespace the tests run in, with
documentation-range addresses only (RFC 5737), and nothing routed out of it:

    internet ns: bridge "internet" 203.0.113.1/24, the family's tox-bootstrapd (DHT + TCP relay)
      | veth (one per further DHT node, `dht_nodes`)
    dht ns:     203.0.113.(100+i)/24, one more tox-bootstrapd that joined the first: the many
                stable nodes of the public Tox network, in small (see Internet)
      | veth (one per household)
    router ns:  wan 203.0.113.(10+i)/24 | nftables masquerade, optional UDP drop, random loss,
                tc tbf caps (upload on wan, download on lan), optional TCP port forwards
      | veth
    household ns: eth0 on a /27 of 192.0.2.0/24 or 198.51.100.0/24, default route via its router;
                  Postfix, Dovecot, the bridge and the test's clients run here (lab/netns.py)

The kernel here has no netem: links get rates and loss but no delay. Everything comes down in
`__exit__`, even when the test failed.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import netns
from .bootstrapd import BootstrapNode
from .ports import free_port

INTERNET = ipaddress.IPv4Network("203.0.113.0/24")
BOOTSTRAP_ADDRESS = "203.0.113.1"  # the internet namespace's own address on its bridge
FIRST_WAN_HOST = 10
FIRST_DHT_HOST = 100  # the further DHT nodes: 203.0.113.101, .102, …
MAX_DHT_NODES = 32
LAN_RANGES = (ipaddress.IPv4Network("192.0.2.0/24"), ipaddress.IPv4Network("198.51.100.0/24"))
LAN_PREFIX = 27  # 8 slices of 32 in each range: up to 16 households
DOCUMENTATION_RANGES = (INTERNET, *LAN_RANGES)
# How long a packet may wait in a cap's queue before it is dropped (tbf's latency): the router's
# buffer. It decides how toxcore fares against TCP on a capped link (docs/benchmarks.md).
DEFAULT_QUEUE_MS = 200
MIN_BURST_BYTES = 3200  # two full frames: below that tbf cannot pass a 1500-byte packet steadily
# Keep interface names under IFNAMSIZ (15): veth peers on the internet bridge are "to-" + this much.
MAX_NAME_IN_IFNAME = 12
_instances = itertools.count(1)


@dataclass(frozen=True)
class Link:
    """A household's line and router. Rates in Mbit/s (None: uncapped); loss: the fraction of
    packets the router drops at random, in each direction; drop_udp: a firewall that lets only
    TCP through; forward_tcp: ports of the router's public address sent on to the household
    (nftables dnat), as for a mail server at home; queue_ms: the router's buffer on a capped
    direction, as the longest wait of a packet in it."""

    down_mbit: float | None = None
    up_mbit: float | None = None
    loss: float = 0.0
    drop_udp: bool = False
    forward_tcp: tuple[int, ...] = ()
    queue_ms: int = DEFAULT_QUEUE_MS

    def __post_init__(self) -> None:
        if self.queue_ms <= 0:
            raise ValueError(f"a queue must hold something: {self.queue_ms} ms")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1): {self.loss}")
        for rate in (self.down_mbit, self.up_mbit):
            if rate is not None and rate <= 0:
                raise ValueError(f"a rate cap must be positive: {rate}")

    def describe(self) -> str:
        def rate(mbit: float | None) -> str:
            return "uncapped" if mbit is None else f"{mbit:g} Mbit/s"

        parts = [f"down {rate(self.down_mbit)}", f"up {rate(self.up_mbit)}", f"loss {self.loss:.1%}"]
        if self.down_mbit is not None or self.up_mbit is not None:
            parts.append(f"queue {self.queue_ms} ms")
        if self.drop_udp:
            parts.append("UDP dropped")
        return ", ".join(parts)


@dataclass(frozen=True)
class SitePlan:
    """The addresses of household number `index`."""

    index: int
    wan: str  # the router's public address
    lan_network: str
    router_lan: str
    host: str  # the household's own address

    @classmethod
    def of(cls, index: int) -> SitePlan:
        slices = list(LAN_RANGES[index % 2].subnets(new_prefix=LAN_PREFIX))
        if index < 0 or index // 2 >= len(slices):
            raise ValueError(f"the address plan has room for {2 * len(slices)} households, not #{index + 1}")
        lan = slices[index // 2]
        wan = INTERNET.network_address + FIRST_WAN_HOST + index
        return cls(index, str(wan), str(lan), str(lan.network_address + 1), str(lan.network_address + 2))

    def addresses(self) -> list[str]:
        return [self.wan, self.router_lan, self.host]


def dht_node_address(index: int) -> str:
    """Where DHT node number `index` sits on the internet bridge: the first is the bridge's own."""
    if not 0 <= index < MAX_DHT_NODES:
        raise ValueError(f"the address plan has room for {MAX_DHT_NODES} DHT nodes, not #{index + 1}")
    if index == 0:
        return BOOTSTRAP_ADDRESS
    return str(INTERNET.network_address + FIRST_DHT_HOST + index)


def in_documentation_ranges(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in DOCUMENTATION_RANGES)


def nft_ruleset(plan: SitePlan, link: Link) -> str:
    """The router's whole nftables ruleset (for `nft -f -`). Loss and the UDP drop sit in the
    forward chain, so they hit both directions and never the router's own traffic."""
    forward = []
    if link.drop_udp:
        forward.append("meta l4proto udp drop")
    if link.loss:
        per_mille = round(link.loss * 1000)
        forward.append(f"numgen random mod 1000 < {per_mille} drop")
    dnat = [f'iifname "wan" tcp dport {port} dnat to {plan.host}:{port}' for port in link.forward_tcp]

    def chain(name: str, hook: str, rules: list[str]) -> str:
        body = "".join(f"\t\t{rule}\n" for rule in rules)
        return f"\tchain {name} {{\n\t\t{hook}\n{body}\t}}\n"

    # Like every home router, nothing from the internet reaches the router itself unasked. It also
    # matters for hole punching: a peer's packet that arrives before ours left would otherwise get
    # a conntrack entry of its own, and our packet to that peer a different source port (Linux
    # keeps NAT mappings unique), so neither side's guess of the other's port would hold. Dropped
    # in the input chain, such a packet's entry is never confirmed.
    unasked = ['iifname "wan" ct state new drop']
    return (
        "table ip toxbridge_lab {\n"
        + chain("input", "type filter hook input priority filter; policy accept;", unasked)
        + chain("forward", "type filter hook forward priority filter; policy accept;", forward)
        + chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", dnat)
        + chain(
            "postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
            ['oifname "wan" masquerade'],
        )
        + "}\n"
    )


def tc_rate_cap(device: str, mbit: float, queue_ms: int = DEFAULT_QUEUE_MS) -> list[str]:
    """tc's command line capping what leaves `device` at `mbit` Mbit/s (token bucket), with a
    queue in which a packet waits at most `queue_ms`."""
    bits_per_second = int(mbit * 1_000_000)
    burst = max(bits_per_second // 8 // 100, MIN_BURST_BYTES)  # 10 ms at full rate
    return [
        "tc",
        "qdisc",
        "replace",
        "dev",
        device,
        "root",
        "tbf",
        "rate",
        f"{bits_per_second}bit",
        "burst",
        str(burst),
        "latency",
        f"{queue_ms}ms",
    ]


@dataclass(frozen=True)
class QdiscStats:
    sent_bytes: int
    dropped: int
    overlimits: int  # packets the cap held back: nonzero means the cap did shape the traffic


def parse_qdisc_stats(text: str) -> QdiscStats:
    """The root qdisc's counters from `tc -s qdisc show dev DEV`."""
    found = re.search(r"Sent (\d+) bytes \d+ pkt \(dropped (\d+), overlimits (\d+)", text)
    if found is None:
        raise ValueError(f"no qdisc counters in tc's output: {text!r}")
    return QdiscStats(*(int(n) for n in found.groups()))


@dataclass
class Site:
    """One household's corner of the lab internet: its router and its own namespace."""

    name: str
    plan: SitePlan
    link: Link
    router_ns: str
    host_ns: str


@dataclass
class Internet:
    """The lab internet; use as a context manager. `root`: where the bootstrap nodes keep their
    files (under world-traversable parents, like every lab root). `dht_nodes`: how many stable
    DHT nodes (tox-bootstrapd, each its own address) the internet has; the first is the family's
    node, the others joined it, and households are given all of them. One node is the least
    that works for a short run; the public Tox network has thousands, and with fewer than 7 a
    household that outlives the others' restarts counts itself off the network (LAB_DHT_SIZE
    in bootstrapd.py says why; the bench and test_internet run that many)."""

    root: Path
    dht_nodes: int = 1
    sites: dict[str, Site] = field(default_factory=dict)
    bootstrap: BootstrapNode | None = None  # the first of `nodes`: the family's own
    nodes: list[BootstrapNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.dht_nodes <= MAX_DHT_NODES:
            raise ValueError(f"a lab internet has 1 to {MAX_DHT_NODES} DHT nodes, not {self.dht_nodes}")
        # /run/netns is the machine's: names carry the pid and a counter, never clash across runs.
        self.prefix = f"tb{os.getpid()}x{next(_instances)}"
        self.inet_ns = f"{self.prefix}-inet"
        self._namespaces: list[str] = []

    # --- building -------------------------------------------------------------

    def _ns(self, name: str) -> str:
        netns.add(name)
        self._namespaces.append(name)
        return name

    def _run(self, namespace: str, command: list[str], stdin: str | None = None) -> None:
        with netns.entered(namespace):
            done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"in {namespace}: {' '.join(command)} failed: {done.stderr.strip()}")

    def _ip(self, namespace: str, *args: str) -> None:
        self._run(namespace, ["ip", *args])

    def start(self) -> Internet:
        self._ns(self.inet_ns)
        self._ip(self.inet_ns, "link", "add", "internet", "type", "bridge")
        self._ip(self.inet_ns, "addr", "add", f"{BOOTSTRAP_ADDRESS}/{INTERNET.prefixlen}", "dev", "internet")
        self._ip(self.inet_ns, "link", "set", "internet", "up")
        node = BootstrapNode(Path(self.root) / "internet-bootstrapd", free_port(), free_port())
        with netns.entered(self.inet_ns):
            node.start()
        node.host = BOOTSTRAP_ADDRESS
        self.bootstrap = node
        self.nodes.append(node)
        for index in range(1, self.dht_nodes):
            self._add_dht_node(index)
        return self

    def _add_dht_node(self, index: int) -> None:
        """One more tox-bootstrapd in a namespace of its own, joined to the first node. Not a
        second address in the internet namespace: toxcore binds the wildcard address, and a UDP
        socket bound so answers from whichever address the kernel's route picks, not from the
        one it was asked on, which the households' NAT would not match to their request."""
        address = dht_node_address(index)
        namespace = self._ns(f"{self.prefix}-dht{index}")
        uplink = f"dht-{index}"  # no "to-": that is the households' (add_site)
        self._ip(
            namespace, "link", "add", "eth0", "type", "veth", "peer", "name", uplink, "netns", self.inet_ns
        )
        self._ip(self.inet_ns, "link", "set", uplink, "master", "internet", "up")
        self._ip(namespace, "addr", "add", f"{address}/{INTERNET.prefixlen}", "dev", "eth0")
        self._ip(namespace, "link", "set", "eth0", "up")
        first = self._node()
        node = BootstrapNode(
            Path(self.root) / f"internet-bootstrapd-{index}",
            free_port(),
            free_port(),
            bootstrap_from=[(first.host, first.port, first.public_key or b"")],
        )
        self.nodes.append(node)  # before start: stop() ends it even if its start fails half-way
        with netns.entered(namespace):
            node.start()
        node.host = address

    def add_site(self, name: str, link: Link) -> Site:
        """A router and a household namespace behind it, wired to the internet bridge."""
        if name in self.sites:
            raise ValueError(f"site {name} exists")
        plan = SitePlan.of(len(self.sites))
        router = self._ns(f"{self.prefix}-{name}-rt")
        host = self._ns(f"{self.prefix}-{name}")
        uplink = f"to-{name[:MAX_NAME_IN_IFNAME]}"
        lan_len = str(LAN_PREFIX)
        self._ip(router, "link", "add", "wan", "type", "veth", "peer", "name", uplink, "netns", self.inet_ns)
        self._ip(self.inet_ns, "link", "set", uplink, "master", "internet", "up")
        self._ip(router, "addr", "add", f"{plan.wan}/{INTERNET.prefixlen}", "dev", "wan")
        self._ip(router, "link", "set", "wan", "up")
        self._ip(router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host)
        self._ip(router, "addr", "add", f"{plan.router_lan}/{lan_len}", "dev", "lan")
        self._ip(router, "link", "set", "lan", "up")
        self._ip(host, "addr", "add", f"{plan.host}/{lan_len}", "dev", "eth0")
        self._ip(host, "link", "set", "eth0", "up")
        self._ip(host, "route", "add", "default", "via", plan.router_lan)
        netns.write_sysctl(router, "net/ipv4/ip_forward", "1")
        self._run(router, ["nft", "-f", "-"], stdin=nft_ruleset(plan, link))
        if link.up_mbit is not None:
            self._run(router, tc_rate_cap("wan", link.up_mbit, link.queue_ms))
        if link.down_mbit is not None:
            self._run(router, tc_rate_cap("lan", link.down_mbit, link.queue_ms))
        site = Site(name, plan, link, router, host)
        self.sites[name] = site
        return site

    def qdisc_stats(self, site: str, device: str) -> QdiscStats:
        """The rate cap's counters on a router's `wan` (upload) or `lan` (download)."""
        with netns.entered(self.sites[site].router_ns):
            done = subprocess.run(
                ["tc", "-s", "qdisc", "show", "dev", device], capture_output=True, text=True
            )
        return parse_qdisc_stats(done.stdout)

    # --- what households are given ---------------------------------------------

    def bootstrap_nodes(self) -> list[tuple[str, int, bytes]]:
        """Every DHT node, the family's first, as Household(bootstrap=…) takes them."""
        self._node()
        return [(node.host, node.port, node.public_key or b"") for node in self.nodes]

    def tox_settings(self) -> dict:
        """The nodes as TCP relays too: what gets a household behind a UDP-dropping firewall online."""
        self._node()
        relays = [
            {"host": node.host, "port": node.tcp_port, "public_key": (node.public_key or b"").hex()}
            for node in self.nodes
        ]
        return {"tcp_relays": relays}

    def _node(self) -> BootstrapNode:
        if self.bootstrap is None:
            raise RuntimeError("the lab internet is not started")
        return self.bootstrap

    # --- teardown ---------------------------------------------------------------

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()
        self.bootstrap = None
        for name in reversed(self._namespaces):
            try:
                netns.delete(name)
            except RuntimeError as e:  # remove the others even when one fails
                print(f"lab internet: {e}")
        self._namespaces.clear()
        self.sites.clear()

    def __enter__(self) -> Internet:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
