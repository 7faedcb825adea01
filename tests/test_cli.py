"""The toxbridge command: exit codes, messages, and what it leaves on disk."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from toxbridge.address import parse_tox_address


def toxbridge(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toxbridge", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "toxbridge.yaml"
    path.write_text(
        f"state_dir: {tmp_path}/state\n"
        "users:\n  - {mailbox: alice, address: alice@alice.test}\n  - {mailbox: alan, address: alan@alice.test}\n"
    )
    return path


def test_init_creates_private_profiles_once(config, tmp_path):
    first = toxbridge(config, "init")
    assert first.returncode == 0, first.stderr
    ids = dict(line.split() for line in first.stdout.splitlines())
    assert set(ids) == {"alice", "alan"}
    for tox_id in ids.values():
        assert parse_tox_address(f"{tox_id}@tox").tox_id is not None  # checksum holds
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for profile in (state / "profiles").iterdir():
        assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    again = toxbridge(config, "init")
    assert dict(line.split() for line in again.stdout.splitlines()) == ids  # profiles kept
    assert "created" not in again.stderr
    shown = toxbridge(config, "id", "alan")
    assert shown.stdout.split() == ["alan", ids["alan"]]


def test_id_before_init_and_unknown_user(config):
    missing = toxbridge(config, "id")
    assert missing.returncode == 1 and "run `toxbridge init`" in missing.stderr
    toxbridge(config, "init")
    unknown = toxbridge(config, "id", "mallory")
    assert unknown.returncode == 1 and "no user 'mallory'" in unknown.stderr


def test_check_config(config, tmp_path):
    ok = toxbridge(config, "check-config")
    assert ok.returncode == 0 and "ok (2 users" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text() + "tox:\n  udp: sometimes\n")
    result = toxbridge(bad, "check-config")
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"toxbridge: {bad}: line 6: tox.udp: expected true or false, got 'sometimes'"
    )
    assert "Traceback" not in result.stderr


def test_check_config_checks_the_contacts(config, tmp_path):
    """A broken contacts book fails check-config (the daemon would refuse to start); --contacts
    checks a file before it is installed (Ansible's validate)."""
    book = tmp_path / "contacts.yaml"
    book.write_text("- name: Tarek\n  addresses: [tarek@example.org]\n  tox_id: " + "AB" * 32 + "\n")
    with_book = tmp_path / "with-book.yaml"
    with_book.write_text(config.read_text() + f"contacts: {book}\n")
    ok = toxbridge(with_book, "check-config")
    assert ok.returncode == 0 and f"{book}: ok (1 contacts)" in ok.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("- name: Tarek\n  addresses: [tarek@example.org]\n  tox_id: 12\n")
    checked = toxbridge(with_book, "check-config", "--contacts", str(broken))
    assert checked.returncode == 1 and checked.stderr.startswith(f"toxbridge: {broken}: line 3:")
    book.write_text(broken.read_text())
    assert toxbridge(with_book, "check-config").returncode == 1


def test_missing_config_file(tmp_path):
    result = toxbridge(tmp_path / "nope.yaml", "check-config")
    assert result.returncode == 1 and "cannot read the config file" in result.stderr


def test_unreadable_profile_is_a_clear_error(config, tmp_path):
    toxbridge(config, "init")
    profile = tmp_path / "state" / "profiles" / "alice.tox"
    profile.write_bytes(b"this is not a tox profile")
    result = toxbridge(config, "id", "alice")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{profile} is not a usable Tox profile" in result.stderr


def test_run_refuses_a_port_in_use(config, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        relay = f"[{{host: 127.0.0.1, port: 9, public_key: '{'0' * 64}'}}]"  # udp off needs a relay; never reached
        config.write_text(
            config.read_text() + f"lmtp_listen: 127.0.0.1:{port}\ntox:\n  udp: false\n  tcp_relays: {relay}\n"
        )
        result = toxbridge(config, "run")
    assert result.returncode == 1
    assert f"cannot listen for Postfix on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_routes_refuses_a_port_in_use_and_a_broken_contacts_file(config, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config.write_text(config.read_text() + f"socketmap_listen: 127.0.0.1:{port}\n")
        result = toxbridge(config, "routes")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot listen for Postfix on 127.0.0.1:{port} (socketmap_listen)" in result.stderr
    book = tmp_path / "contacts.yaml"
    book.write_text("- name: x\n  tox_id: nonsense\n")
    config.write_text(config.read_text() + f"contacts: {book}\n")
    result = toxbridge(config, "routes")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "toxbridge routes does not start without its contacts" in result.stderr


def test_usage_error_exit_status(config):
    result = toxbridge(config, "frobnicate")
    assert result.returncode == 2


def test_run_explains_a_taken_tox_port(config):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config.write_text(config.read_text() + f"tox:\n  port_range: [{port}, {port}]\n")
        result = toxbridge(config, "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"no free UDP port in tox.port_range {port}-{port}" in result.stderr
