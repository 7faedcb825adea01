"""Free TCP ports on loopback, picked at run time."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

# Below this the lab never picks: the well-known and registered ports of real services.
LOWEST_PORT = 20000
_handed_out: set[int] = set()
_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):  # bootstrapd's port is UDP and TCP
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, never handed out twice by this process.

    Not the kernel's choice (bind to port 0): that comes from the ephemeral range, the ports every
    outgoing connection on the machine takes, so between this check and the server's own bind any
    client could take it (the demo's Postfix once failed with "Address already in use" that way).
    Ports below the ephemeral range are taken only by a server that asks for that number.
    """
    top = _ephemeral_start() - 1
    low = LOWEST_PORT if top - LOWEST_PORT >= 1000 else 1024
    with _lock:
        for _ in range(1000):
            port = random.randint(low, top)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    raise OSError(f"no free port between {low} and {top} after 1000 tries")


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def socket_accepts(path: Path) -> bool:
    """A unix stream socket at `path` takes a connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
