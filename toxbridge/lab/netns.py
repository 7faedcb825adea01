"""Named network namespaces (`ip netns add`) and a way to be inside one for a while.

setns(2) on a network namespace changes only the calling thread, and whatever that thread starts
(subprocesses, daemons that fork) is born there. So the lab enters a household's namespace around
the calls that start its servers or open sockets to them, and leaves it afterwards: the same
Postfix, Dovecot and bridge code runs behind a home router without knowing it. Python 3.11 has no
os.setns, hence ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000  # <sched.h>
NETNS_DIR = Path("/run/netns")  # where `ip netns add` keeps its bind mounts

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body with this thread in namespace `name` (None: stay where it is). Nests."""
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def add(name: str) -> None:
    """A new namespace with its loopback up (servers in it listen on 127.0.0.1) and IPv6 off, so
    that no interface gets an address (not even link-local) outside the lab's IPv4 plan."""
    _ip("netns", "add", name)
    for scope in ("all", "default"):
        write_sysctl(name, f"net/ipv6/conf/{scope}/disable_ipv6", "1")
    _ip("-n", name, "link", "set", "lo", "up")


def delete(name: str) -> None:
    """Remove the name; the namespace itself goes when its last process does."""
    if (NETNS_DIR / name).exists():
        _ip("netns", "delete", name)


def write_sysctl(name: str, key: str, value: str) -> None:
    """A per-namespace sysctl (e.g. net/ipv4/ip_forward): /proc/sys/net shows the opener's namespace."""
    with entered(name):
        Path("/proc/sys", key).write_text(value)
