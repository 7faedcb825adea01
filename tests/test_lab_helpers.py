"""The lab's own helpers where a fresh machine found them wanting: system users created by
households that start at once, and ports picked where no outgoing connection takes them."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
import uuid

import pytest

from toxbridge.lab import _fs
from toxbridge.lab.ports import free_port


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="creates a system user")
def test_system_user_created_by_many_at_once():
    """The bench starts two households in threads; on a machine without `vmail` both created
    it and the second useradd exited 9. Here eight threads ask at once."""
    name = f"tb{uuid.uuid4().hex[:8]}"
    start = threading.Barrier(8)
    results: list[object] = []

    def create() -> None:
        start.wait()
        try:
            results.append(_fs.ensure_system_user(name).pw_uid)
        except Exception as e:  # the race shows as an exception in some thread
            results.append(e)

    threads = [threading.Thread(target=create) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(map(repr, results))) == 1 and isinstance(results[0], int), results
        assert pwd.getpwnam(name).pw_uid == results[0]
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)


def test_free_ports_avoid_the_ephemeral_range_and_repeats():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral = int(f.read().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(port < ephemeral for port in ports)


def test_free_port_skips_a_port_in_use(monkeypatch):
    from toxbridge.lab import ports

    with socket.socket() as busy, socket.socket() as other:
        busy.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        taken, free = busy.getsockname()[1], other.getsockname()[1]
        other.close()
        busy.listen()
        picks = iter([taken, taken, free])
        monkeypatch.setattr(ports.random, "randint", lambda low, high: next(picks))
        assert free_port() == free
