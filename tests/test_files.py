"""Files the bridge writes: atomic replacement (modes, owners, failures), private directories,
SQLite databases."""

from __future__ import annotations

import os
import stat

import pytest

from toxbridge import files
from toxbridge.files import StateError, open_database, replace_file, state_subdir


def mode_of(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_mode_asked_for_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        replace_file(tmp_path / "contacts.yaml", b"# hi\n", 0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "contacts.yaml").read_bytes() == b"# hi\n"
    assert mode_of(tmp_path / "contacts.yaml") == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["contacts.yaml"]  # no temp left


def test_without_a_mode_the_umask_decides(tmp_path):
    old = os.umask(0o027)
    try:
        replace_file(tmp_path / "a.png", b"png")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "a.png") == 0o640


def test_an_existing_file_is_replaced_by_rename_with_the_mode_asked_for(tmp_path):
    path = tmp_path / "alice.tox"
    path.write_bytes(b"old")
    path.chmod(0o644)
    inode = path.stat().st_ino
    replace_file(path, b"new", 0o600)
    assert path.read_bytes() == b"new" and mode_of(path) == 0o600
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place


def test_keep_owner_carries_an_existing_files_mode_and_owner_over(tmp_path):
    path = tmp_path / "contacts.yaml"
    path.write_text("old\n")
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(path, 1234, 5678)
    replace_file(path, "new ✓\n".encode(), 0o644, keep_owner=True)
    assert path.read_text(encoding="utf-8") == "new ✓\n"
    assert mode_of(path) == 0o640
    if os.geteuid() == 0:
        assert (path.stat().st_uid, path.stat().st_gid) == (1234, 5678)
    replace_file(tmp_path / "new.yaml", b"x", 0o644, keep_owner=True)  # nothing to keep: the mode given
    assert mode_of(tmp_path / "new.yaml") == 0o644


def test_a_failure_leaves_the_old_file_no_temp_and_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / "contacts.yaml"
    path.write_text("old\n")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken)
    with pytest.raises(OSError) as raised:
        replace_file(path, b"new\n", 0o644)
    assert raised.value.filename == str(path) and raised.value.errno == 28
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["contacts.yaml"]


def test_a_missing_directory_is_an_error_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-dir" / "x"
    with pytest.raises(FileNotFoundError) as raised:
        replace_file(missing, b"x")
    assert raised.value.filename == str(missing)


def test_state_subdir_is_private_and_says_what_it_cannot_create(tmp_path):
    made = state_subdir(tmp_path / "state", "profiles")
    assert made == tmp_path / "state" / "profiles"
    assert mode_of(tmp_path / "state") == 0o700 and mode_of(made) == 0o700
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="cannot create .*file/x"):
        state_subdir(tmp_path / "file", "x")


def test_open_database_is_durable_and_makes_its_schema(tmp_path):
    db = open_database(tmp_path / "x.sqlite", ("CREATE TABLE IF NOT EXISTS t (a INTEGER)",))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db.execute("INSERT INTO t VALUES (1)")  # autocommit: another connection sees it at once
    db.close()
    again = open_database(tmp_path / "x.sqlite", ("CREATE TABLE IF NOT EXISTS t (a INTEGER)",))
    assert again.execute("SELECT a FROM t").fetchall() == [(1,)]
