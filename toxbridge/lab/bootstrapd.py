"""A private tox-bootstrapd (DHT node + TCP relay) for tests and the demo.

toxcore binds its sockets to the wildcard address and tox-bootstrapd has no
option to bind elsewhere: run it only inside a loopback-only network
namespace (`unshare -n`), as the integration tests do.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from . import _fs
from .ports import port_accepts, wait_until

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
KEY_SIZE = 32  # the keys file is public key (32 bytes) then secret key (32 bytes)


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
