"""A private tox-bootstrapd (DHT node + TCP relay) for tests and the demo.

toxcore binds its sockets to the wildcard address and tox-bootstrapd has no
option to bind elsewhere: run it only inside a loopback-only network
namespace (`unshare -n`), as the integration tests do.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import _fs
from .ports import free_port, port_accepts, wait_until

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
KEY_SIZE = 32  # the keys file is public key (32 bytes) then secret key (32 bytes)

# toxcore 0.2.18 (onion_client.c, onion_isconnected) counts a node on the network only while at
# least half of min(12, the distinct nodes it has ever taken as onion path nodes) of its
# announce nodes answer, and searches for friends (friend requests, a restarted friend's new
# DHT key) only while on it. Every start gives a Tox instance a new DHT key, so a node that
# outlives others' restarts soon counts 12 and then needs 6 other nodes that answer: in a
# network of fewer, it goes offline for good. Measured: every long-lived bridge of `make test`
# went offline at once late in the session, when only 4 of its nodes were left (docs/facts.md).
# So the lab's network always has this many nodes that stay.
LAB_DHT_SIZE = 8


def bootstrap_nodes_setting(nodes: list[tuple[str, int, bytes]]) -> str:
    """The entries of tox-bootstrapd's `bootstrap_nodes` list (libconfig groups)."""
    return ", ".join(
        f'{{ address = "{host}"; port = {port}; public_key = "{key.hex().upper()}"; }}'
        for host, port, key in nodes
    )


class BootstrapNode:
    host: str = "127.0.0.1"

    def __init__(
        self, root: Path, port: int, tcp_port: int, bootstrap_from: list[tuple[str, int, bytes]] | None = None
    ):
        self.root = Path(root)
        self.port = port
        self.tcp_port = tcp_port
        # (host, port, public key) of the nodes this one joins; none: the first node of a network
        self.bootstrap_from = list(bootstrap_from or [])
        self.dir = self.root / f"bootstrapd-{port}"
        self.config_file = self.dir / "tox-bootstrapd.conf"
        self.keys_file = self.dir / "keys"
        self.log_path = self.dir / "tox-bootstrapd.log"
        self.public_key: bytes | None = None
        self._proc: subprocess.Popen | None = None

    def write_config(self) -> None:
        _fs.prepare_root(self.root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        # libconfig syntax. LAN discovery would broadcast to 255.255.255.255;
        # IPv6 off keeps everything on 127.0.0.1; no bootstrap nodes: this is
        # the first node of a private network, else it joins the ones given.
        self.config_file.write_text(f"""\
port = {self.port}
keys_file_path = "{self.keys_file}"
pid_file_path = "{self.dir / "tox-bootstrapd.pid"}"
enable_ipv6 = false
enable_ipv4_fallback = true
enable_lan_discovery = false
enable_tcp_relay = true
tcp_relay_ports = [{self.tcp_port}]
enable_motd = true
motd = "toxbridge lab"
bootstrap_nodes = ({bootstrap_nodes_setting(self.bootstrap_from)})
""")

    def start(self) -> None:
        self.write_config()
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = process = subprocess.Popen(
                ["tox-bootstrapd", "--foreground", "--log-backend=stdout", f"--config={self.config_file}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

        def ready() -> bool:
            if process.poll() is not None:
                return True
            return (
                self.keys_file.exists()
                and self.keys_file.stat().st_size >= 2 * KEY_SIZE
                and port_accepts(self.tcp_port)
            )

        ok = wait_until(ready, START_TIMEOUT)
        if self._proc.poll() is not None or not ok:
            rc = self._proc.poll()
            self.stop()
            raise RuntimeError(
                f"tox-bootstrapd on {self.port}/{self.tcp_port} not ready "
                f"(rc={rc}):\n{_fs.tail(self.log_path)}"
            )
        self.public_key = self.keys_file.read_bytes()[:KEY_SIZE]
        self.start_seconds = time.monotonic() - t0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        if self._proc is None:
            return
        t0 = time.monotonic()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self.stop_seconds = time.monotonic() - t0

    def __enter__(self) -> BootstrapNode:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class LabDHT:
    """A private Tox network of `size` tox-bootstrapd (each a DHT node and TCP relay), the
    others joined to the first: enough nodes that stay (LAB_DHT_SIZE says why). Clients need
    only the first (`first`); the DHT tells them of the others."""

    def __init__(self, root: Path, size: int = LAB_DHT_SIZE, ports: Callable[[], int] = free_port):
        if size < 1:
            raise ValueError("a network needs a node")
        self.root, self.size, self._ports = Path(root), size, ports
        self.nodes: list[BootstrapNode] = []

    @property
    def first(self) -> BootstrapNode:
        return self.nodes[0]

    def start(self) -> None:
        try:
            while len(self.nodes) < self.size:
                first = self.nodes[0] if self.nodes else None
                joins = [(first.host, first.port, first.public_key)] if first and first.public_key else []
                node = BootstrapNode(self.root, self._ports(), self._ports(), bootstrap_from=joins)
                self.nodes.append(node)
                node.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def __enter__(self) -> LabDHT:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
