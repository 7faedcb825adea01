"""A Tox ID as a QR code (`toxbridge id --qr/--png`) and `toxbridge invite`.

Every code is read back by a real QR reader, zbarimg (Debian's zbar-tools, `make deps`): the PNG
as written, and the terminal text after turning its half blocks back into pixels here, with a
reading of the characters of its own, not the drawing code's.
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import png
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toxbridge import cli
from toxbridge.address import tox_checksum
from toxbridge.contacts import book as contacts
from toxbridge.ops import invite, qr

# Light upper half, light lower half for each character of the drawing; anything else is an error.
HALVES = {"\u2588": (True, True), "\u2580": (True, False), "\u2584": (False, True), " ": (False, False)}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tox_id(key: bytes, nospam: bytes = b"\x01\x02\x03\x04") -> bytes:
    return key + nospam + tox_checksum(key + nospam)


ALICE = tox_id(bytes(range(32)))


def zbar(image: bytes) -> str:
    """What zbarimg reads in a PNG: the one QR code's text."""
    if shutil.which("zbarimg") is None:
        pytest.fail("zbarimg is missing: apt-get install zbar-tools (`make deps` does)")
    result = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "--nodbus", "-Sdisable", "-Sqrcode.enable", "-"],
        input=image,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, f"zbarimg read no QR code (exit {result.returncode}): {result.stderr!r}"
    return result.stdout.decode().removesuffix("\n")


def pixels(text: str) -> list[list[bool]]:
    """The drawing as modules, True = light: two module rows per line, colour codes dropped."""
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    rows: list[list[bool]] = []
    for line in lines:
        halves = [HALVES[char] for char in line]
        rows.append([upper for upper, _ in halves])
        rows.append([lower for _, lower in halves])
    return rows


def as_png(light: list[list[bool]], scale: int = 4) -> bytes:
    rows = []
    for row in light:
        line = [int(value) for value in row for _ in range(scale)]
        rows.extend([line] * scale)
    out = io.BytesIO()
    png.Writer(len(rows[0]), len(rows), greyscale=True, bitdepth=1).write(out, rows)
    return out.getvalue()


def qr_lines(out: str) -> str:
    """The drawing's lines in the command's output (the rest is `USER TOXID`)."""
    return "".join(
        line + "\n" for line in out.splitlines() if line and set(ANSI.sub("", line)) <= set(HALVES)
    )


# ------------------------------------------------------------------------------ qr module


def test_tox_uri_is_tox_scheme_and_upper_case_hex():
    assert qr.tox_uri(ALICE) == "tox:" + ALICE.hex().upper()
    with pytest.raises(ValueError):
        qr.tox_uri(ALICE[:32])


@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour"])
def test_terminal_text_reads_back(colour):
    text = qr.to_text(qr.matrix(qr.tox_uri(ALICE)), colour=colour)
    assert ("\x1b[" in text) is colour
    assert zbar(as_png(pixels(text))) == "tox:" + ALICE.hex().upper()


def test_terminal_text_is_dark_on_light_with_quiet_zone_and_fits_a_terminal():
    modules = qr.matrix(qr.tox_uri(ALICE))
    light = pixels(qr.to_text(modules))
    size = len(modules)
    assert len(light[0]) == size + 2 * qr.QUIET_ZONE <= 80
    assert all(len(row) == len(light[0]) for row in light)
    # Light on every side, at least 4 modules, and the code's own modules in between, dark = dark.
    for row in light[:4] + light[4 + size :]:
        assert all(row)
    for y, row in enumerate(modules):
        line = light[4 + y]
        assert all(line[:4]) and all(line[4 + size :])
        assert line[4 : 4 + size] == [not dark for dark in row]
    assert not light[4][4]  # the finder pattern's corner is dark: not inverted


@settings(max_examples=8, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=4, max_size=4))
def test_any_tox_id_reads_back_from_text(key, nospam):
    address = tox_id(key, nospam)
    text = qr.to_text(qr.matrix(qr.tox_uri(address)))
    assert zbar(as_png(pixels(text))) == "tox:" + address.hex().upper()


def test_png_reads_back(tmp_path):
    path = tmp_path / "alice.png"
    qr.write_png(path, qr.matrix(qr.tox_uri(ALICE)))
    assert zbar(path.read_bytes()) == "tox:" + ALICE.hex().upper()
    width, height, rows, info = png.Reader(filename=str(path)).read()
    rows = [list(row) for row in rows]
    margin = qr.QUIET_ZONE * qr.PNG_SCALE
    assert width == height and info["greyscale"] and info["bitdepth"] == 1
    assert all(all(row) for row in rows[:margin] + rows[-margin:])  # white margins
    assert all(all(row[:margin]) and all(row[-margin:]) for row in rows)
    assert [p.name for p in tmp_path.iterdir()] == ["alice.png"]  # no temp file left


def test_png_that_cannot_be_written_names_the_file(tmp_path):
    missing = tmp_path / "no-such-dir" / "alice.png"
    with pytest.raises(OSError) as raised:
        qr.write_png(missing, qr.matrix(qr.tox_uri(ALICE)))
    assert raised.value.filename == str(missing)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(OSError) as raised:
        qr.write_png(directory, qr.matrix(qr.tox_uri(ALICE)))
    assert raised.value.filename == str(directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]  # temp file removed


# ------------------------------------------------------------------------------ CLI


class Household:
    """A config file with its users; run(*args) -> (exit code, stdout, stderr) via cli.main."""

    def __init__(self, root: Path, capsys, *mailboxes: str, domain: str = "alice.test") -> None:
        root.mkdir()
        self.contacts = root / "contacts.yaml"
        self.config = root / "toxbridge.yaml"
        self.config.write_text(
            f"state_dir: {root}/state\ncontacts: {self.contacts}\nusers:\n"
            + "".join(f"  - {{mailbox: {m}, address: {m}@{domain}}}\n" for m in mailboxes)
        )
        self.capsys = capsys

    def run(self, *args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(["--config", str(self.config), *args])
        except SystemExit as e:  # argparse's own usage errors
            assert isinstance(e.code, int), e.code  # argparse exits with a number
            code = e.code
        out, err = self.capsys.readouterr()
        return code, out, err

    def ids(self) -> dict[str, str]:
        code, out, err = self.run("id")
        assert code == 0, err
        return dict(line.split() for line in out.splitlines())


@pytest.fixture
def two(tmp_path, capsys) -> Household:
    return Household(tmp_path / "two", capsys, "alice", "alan")


@pytest.fixture
def one(tmp_path, capsys) -> Household:
    return Household(tmp_path / "one", capsys, "bob", domain="bob.test")


def test_before_init_qr_png_and_invite_say_run_init(two, tmp_path):
    for args in (
        ["id", "--qr", "alice"],
        ["id", "--png", str(tmp_path / "a.png"), "alice"],
        ["invite", "alice"],
    ):
        code, out, err = two.run(*args)
        assert (code, out) == (1, ""), args
        assert "alice has no Tox profile yet; run `toxbridge init`" in err
    assert not (tmp_path / "a.png").exists()


def test_qr_prints_a_code_that_reads_back_and_the_id_line(two):
    assert two.run("init")[0] == 0
    ids = two.ids()
    code, out, err = two.run("id", "--qr", "alan")
    assert code == 0, err
    assert out.splitlines()[-1] == f"alan {ids['alan']}"
    assert "\x1b[" not in out  # not a terminal: no colour codes
    assert zbar(as_png(pixels(qr_lines(out)))) == f"tox:{ids['alan']}"


def test_png_is_written_and_reads_back(two, tmp_path):
    two.run("init")
    path = tmp_path / "alice.png"
    code, out, err = two.run("id", "--png", str(path), "alice")
    assert code == 0, err
    assert out == f"alice {two.ids()['alice']}\n"  # the drawing only with --qr
    assert f"to {path}" in err
    assert zbar(path.read_bytes()) == f"tox:{two.ids()['alice']}"


def test_png_not_writable_is_exit_1(two, tmp_path):
    two.run("init")
    path = tmp_path / "no-such-dir" / "alice.png"
    code, out, err = two.run("id", "--qr", "--png", str(path), "alice")
    assert (code, out) == (1, "")
    assert err == f"toxbridge: {path}: No such file or directory\n"


def test_one_user_must_be_named_among_several(two):
    two.run("init")
    for args in (["id", "--qr"], ["id", "--png", "x.png"], ["invite"]):
        code, out, err = two.run(*args)
        assert (code, out) == (2, ""), args
        assert "is for one user: name one of alice, alan" in err
    code, out, err = two.run("id", "--qr", "mallory")
    assert code == 1 and "no user 'mallory'" in err
    code, out, err = two.run("invite", "mallory")
    assert code == 1 and "no user 'mallory'" in err


def test_the_only_user_needs_no_name(one):
    one.run("init")
    bob = one.ids()["bob"]
    code, out, err = one.run("id", "--qr")
    assert code == 0, err
    assert zbar(as_png(pixels(qr_lines(out)))) == f"tox:{bob}"
    code, out, err = one.run("invite")
    assert code == 0 and bob in out


def test_bad_command_line_is_exit_2(two):
    assert two.run("id", "--png")[0] == 2  # FILE missing
    assert two.run("invite", "alice", "alan")[0] == 2


def test_invite_says_who_and_how_and_its_command_adds_the_contact(two, one):
    two.run("init")
    alan = two.ids()["alan"]
    code, out, err = two.run("invite", "alan")
    assert code == 0, err
    assert "My address: alan@alice.test" in out and f"My Tox ID:  {alan}" in out
    assert "Tox app" in out and "toxbridge invite" in out
    commands = [
        line.strip() for line in out.splitlines() if line.strip().startswith("toxbridge contacts add ")
    ]
    assert commands == [f"toxbridge contacts add alan {alan} alan@alice.test"]
    # The friend's household pastes the command: alan's address now goes to alan's Tox ID.
    code, out, err = one.run(*shlex.split(commands[0])[1:])
    assert code == 0, err
    contact = contacts.load(one.contacts, ("bob",)).owner("alan@alice.test")
    assert contact is not None and contact.tox_id == bytes.fromhex(alan)


def test_invitation_quotes_what_a_shell_would_split():
    text = invite.invitation("o'brien@x.test", ALICE.hex().upper())
    line = next(line for line in text.splitlines() if "contacts add" in line)
    assert shlex.split(line)[3:] == ["o'brien", ALICE.hex().upper(), "o'brien@x.test"]
