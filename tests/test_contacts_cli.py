"""`toxbridge contacts list|add|remove|pending|accept`, run in-process through cli.main."""

from __future__ import annotations

import calendar
import os
import time
from pathlib import Path

import pytest

from toxbridge import cli
from toxbridge.address import tox_checksum
from toxbridge.contacts import book as contacts
from toxbridge.contacts.roster import Roster

MAILBOXES = ("mom", "dad")


def full_id(byte: int) -> bytes:
    key = bytes([byte]) * 32
    return key + b"\x0a\x0b\x0c\x0d" + tox_checksum(key + b"\x0a\x0b\x0c\x0d")


ID_A, ID_B, ID_C = full_id(0xA1), full_id(0xB2), full_id(0xC3)


class Env:
    def __init__(self, root: Path) -> None:
        self.state = root / "state"
        self.state.mkdir()
        self.contacts = root / "etc" / "contacts.yaml"
        self.config = root / "toxbridge.yaml"
        self.config.write_text(
            f"state_dir: {self.state}\n"
            f"contacts: {self.contacts}\n"
            "users:\n"
            "  - {mailbox: mom, address: mom@home.example}\n"
            "  - {mailbox: dad, address: dad@home.example}\n"
        )

    def book(self):
        return contacts.load(self.contacts, MAILBOXES).contacts

    def roster(self) -> Roster:
        return Roster(self.state / "roster.sqlite")


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def run(env, capsys):
    """run(*args) -> (exit code, stdout, stderr); argparse's own exit becomes its code."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(["--config", str(env.config), "contacts", *args])
        except SystemExit as e:
            assert isinstance(e.code, int), e.code  # argparse exits with a number
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def recent(shown: str) -> bool:
    """A `YYYY-MM-DD HH:MM` UTC time within two minutes of now."""
    return abs(calendar.timegm(time.strptime(shown, "%Y-%m-%d %H:%M")) - time.time()) < 120


def rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    assert lines[0] == "NAME\tADDRESSES\tTOX ID\tUSERS\tSOURCE"
    return [line.split("\t") for line in lines[1:]]


# ---------------------------------------------------------------- add / list


def test_list_without_file_or_roster(run, env):
    code, out, err = run("list")
    assert (code, rows(out), err) == (0, [], "")
    assert not (env.state / "roster.sqlite").exists()  # listing creates nothing


def test_add_then_list(run, env):
    code, out, err = run("add", "Tarek", ID_A.hex(), "Tarek@Example.org", "t@example.net", "--user", "mom")
    assert code == 0, err
    assert err == ""
    assert out.startswith(f"added Tarek ({ID_A.hex().upper()[:16]}…) for tarek@example.org, t@example.net")
    code, out, err = run("add", "Grandma", ID_B.hex()[:64].upper())
    assert code == 0, err
    assert "for no ordinary address" in out
    (tarek, grandma) = env.book()
    assert (tarek.name, tarek.addresses, tarek.tox_id, tarek.users) == (
        "Tarek",
        ("tarek@example.org", "t@example.net"),
        ID_A,
        ("mom",),
    )
    assert (grandma.public_key, grandma.tox_id, grandma.users) == (ID_B[:32], None, ())
    assert env.contacts.read_text().startswith("# toxbridge contacts")
    code, out, err = run("list")
    assert code == 0 and err == ""
    assert rows(out) == [
        [
            "Tarek",
            "tarek@example.org,t@example.net",
            ID_A.hex().upper(),
            "mom",
            f"{env.contacts}:{tarek.line}",
        ],
        ["Grandma", "-", ID_B.hex()[:64].upper(), "all", f"{env.contacts}:{grandma.line}"],
    ]


def test_add_keeps_hand_written_comments(run, env):
    env.contacts.parent.mkdir()
    env.contacts.write_text(f"# mine\n- name: A  # first\n  tox_id: {ID_A.hex()}\n# end\n")
    env.contacts.chmod(0o600)
    assert run("add", "B", ID_B.hex(), "b@example.org")[0] == 0
    text = env.contacts.read_text()
    assert text.startswith(f"# mine\n- name: A  # first\n  tox_id: {ID_A.hex()}\n# end\n- name: B\n")
    assert oct(env.contacts.stat().st_mode & 0o777) == oct(0o600)


def test_add_twice_the_same_address_fails(run, env):
    assert run("add", "A", ID_A.hex(), "a@example.org")[0] == 0
    before = env.contacts.read_text()
    code, out, err = run("add", "B", ID_B.hex(), "x@example.org", "A@example.org")
    assert code == 1 and out == ""
    assert err.startswith("toxbridge: ") and "a@example.org is already the address of 'A'" in err
    assert env.contacts.read_text() == before


@pytest.mark.parametrize(
    "args, error",
    [
        (["A", "abc"], "76 hex digits"),
        (["A", ID_A.hex()[:-1] + "0" if ID_A.hex()[-1] != "0" else ID_A.hex()[:-1] + "1"], "checksum"),
        (["A", ID_A.hex(), "nobody"], "not an e-mail address"),
        (["A", ID_A.hex(), ID_B.hex() + "@tox"], "need no contact"),
        (["A", ID_A.hex(), "--user", "grandpa"], "no user 'grandpa' in"),
        (["  ", ID_A.hex()], "a contact needs a name"),
    ],
)
def test_add_bad_input_is_a_usage_error(run, env, args, error):
    code, out, err = run("add", *args)
    assert code == 2 and out == ""
    assert err.startswith("toxbridge: ") and error in err
    assert not env.contacts.exists()


def test_add_missing_argument_is_a_usage_error(run):
    code, out, err = run("add", "OnlyAName")
    assert code == 2 and out == "" and "required" in err


def test_add_to_a_flow_style_file_is_refused(run, env):
    env.contacts.parent.mkdir()
    flow = f"[{{name: A, tox_id: {ID_A.hex()}}}]\n"
    env.contacts.write_text(flow)
    code, out, err = run("add", "B", ID_B.hex(), "b@example.org")
    assert code == 1 and out == "" and "edit it by hand" in err
    assert env.contacts.read_text() == flow


def test_broken_contacts_file_fails_list(run, env):
    env.contacts.parent.mkdir()
    env.contacts.write_text("- name: A\n")
    code, out, err = run("list")
    assert code == 1 and out == "" and f"{env.contacts}: line 1: entry has no tox_id" in err


def test_bad_config_fails(env, capsys, tmp_path):
    assert cli.main(["--config", str(tmp_path / "none.yaml"), "contacts", "list"]) == 1
    assert "cannot read the config file" in capsys.readouterr().err


def test_unknown_action_is_a_usage_error(run):
    assert run("frobnicate")[0] == 2
    assert run()[0] == 2


# ---------------------------------------------------------------- learned pairings, remove


def test_learned_pairings_show_in_list_and_remove_forgets_them(run, env):
    roster = env.roster()
    assert roster.learn("mom", "Pen@Pal.example", ID_C[:32])
    assert roster.learn("dad", "pen@pal.example", ID_C[:32])
    assert roster.learn("dad", "other@pal.example", ID_B[:32])
    roster.close()
    code, out, err = run("list")
    assert code == 0
    learned = [r for r in rows(out) if r[0] == "-"]
    assert [r[:4] for r in learned] == [
        ["-", "other@pal.example", ID_B[:32].hex().upper(), "dad"],
        ["-", "pen@pal.example", ID_C[:32].hex().upper(), "dad"],
        ["-", "pen@pal.example", ID_C[:32].hex().upper(), "mom"],
    ]
    # marked as a first claim (issue 15.4); the note says how to refuse one
    assert "trust on first use" in err and "contacts remove ADDRESS" in err
    assert all(r[4].startswith("learned* ") and r[4].endswith(" UTC") and recent(r[4][9:-4]) for r in learned)

    code, out, err = run("remove", "PEN@pal.example")
    assert code == 0, err
    assert out == "forgot the learned pairing of PEN@pal.example (2 mailbox(es))\n"
    roster = env.roster()
    assert [(e.mailbox, e.address) for e in roster.learned()] == [("dad", "other@pal.example")]
    roster.close()
    code, out, err = run("remove", "pen@pal.example")
    assert code == 1 and "no contact, accepted stranger or learned address matches 'pen@pal.example'" in err


@pytest.mark.parametrize("what", ["Tarek", "tarek", "T@EXAMPLE.NET", ID_A.hex()[:8], ID_A.hex()[:8].upper()])
def test_remove_by_name_address_or_key_prefix(run, env, what):
    run("add", "Tarek", ID_A.hex(), "tarek@example.org", "t@example.net")
    run("add", "Grandma", ID_B.hex(), "granny@example.org")
    code, out, err = run("remove", what)
    assert code == 0, err
    assert out.startswith("removed Tarek (line ") and str(env.contacts) in out
    assert [c.name for c in env.book()] == ["Grandma"]


def test_remove_last_and_first_entries(run, env):
    for i, name in enumerate(["A", "B", "C"]):
        run("add", name, full_id(0xA0 + i).hex(), f"{name.lower()}@example.org")
    header = env.contacts.read_text().split("- name: A")[0]
    assert run("remove", "C")[0] == 0
    assert [c.name for c in env.book()] == ["A", "B"]
    assert run("remove", "a@example.org")[0] == 0
    assert [c.name for c in env.book()] == ["B"]
    assert run("remove", "B")[0] == 0
    assert env.book() == ()
    assert env.contacts.read_text() == header  # the header comments stay


def test_remove_ambiguous_or_unknown_fails(run, env):
    run("add", "Twin", ID_A.hex(), "one@example.org")
    run("add", "twin", ID_B.hex(), "two@example.org")
    before = env.contacts.read_text()
    code, out, err = run("remove", "TWIN")
    assert code == 1 and "'TWIN' matches 2 contacts (Twin, twin)" in err
    code, out, err = run("remove", "nobody@example.org")
    assert code == 1 and out == "" and "no contact, accepted stranger or learned address matches" in err
    assert env.contacts.read_text() == before


def test_remove_contact_and_learned_pairing_of_the_same_address(run, env):
    run("add", "A", ID_A.hex(), "a@example.org")
    roster = env.roster()
    roster.learn("mom", "a@example.org", ID_B[:32])  # left over from before the contact was written
    roster.close()
    code, out, err = run("remove", "a@example.org")
    assert code == 0 and err == ""
    assert "removed A" in out and "forgot the learned pairing of a@example.org (1 mailbox(es))" in out
    assert env.book() == ()


# ---------------------------------------------------------------- pending / accept


def pend(env: Env, *requests: tuple[str, bytes, str]) -> None:
    roster = env.roster()
    for mailbox, key, message in requests:
        roster.add_pending(mailbox, key, message)
    roster.close()


def test_pending_without_roster(run):
    code, out, err = run("pending")
    assert (code, out, err) == (0, "USER\tPUBLIC KEY\tFIRST SEEN (UTC)\tMESSAGE\n", "")


def test_pending_lists_requests(run, env):
    pend(env, ("dad", ID_C[:32], "hi, it's Carl"), ("mom", ID_B[:32], "Grüße"))
    code, out, err = run("pending")
    assert code == 0 and err == ""
    lines = [line.split("\t") for line in out.splitlines()[1:]]
    assert (
        sorted((m, k, msg) for m, k, _, msg in lines)
        == [  # same first_seen: any order
            ("dad", ID_C[:32].hex().upper(), "hi, it's Carl"),
            ("mom", ID_B[:32].hex().upper(), "Grüße"),
        ]
    )
    assert all(recent(line[2]) for line in lines)


def test_accept_makes_a_contact_serving_the_mailbox_that_asked(run, env):
    pend(env, ("dad", ID_C[:32], "hello"), ("mom", ID_B[:32], "other"))
    code, out, err = run(
        "accept", ID_C[:32].hex()[:8].upper(), "--name", "Carl", "--address", "Carl@Example.org"
    )
    assert code == 0, err
    assert out.startswith("added Carl")
    (carl,) = env.book()
    assert carl == contacts.Contact("Carl", ("carl@example.org",), ID_C[:32], None, ("dad",))
    assert carl.serves("dad") and not carl.serves("mom")


def test_accept_asked_by_every_mailbox_serves_all(run, env):
    pend(env, ("dad", ID_C[:32], "x"), ("mom", ID_C[:32], "x"))
    assert run("accept", ID_C[:32].hex())[0] == 0
    (friend,) = env.book()
    assert friend.users == () and friend.addresses == ()
    assert friend.name == f"Tox friend {ID_C[:32].hex()[:8].upper()}"


def test_accept_user_option_overrides(run, env):
    pend(env, ("dad", ID_C[:32], "x"))
    assert run("accept", ID_C[:32].hex()[:12], "--user", "mom")[0] == 0
    assert env.book()[0].users == ("mom",)
    code, out, err = run("accept", ID_B.hex(), "--user", "grandpa")
    assert code == 2 and out == "" and "no user 'grandpa'" in err


def test_accept_key_not_pending(run, env):
    # a full Tox ID (or key) given on the command line is accepted without a request
    code, out, err = run("accept", ID_A.hex(), "--name", "Ann")
    assert code == 0, err
    assert env.book()[0] == contacts.Contact("Ann", (), ID_A[:32], ID_A, ())
    code, out, err = run("accept", "deadbeef")
    assert code == 1 and out == "" and "no pending friend request matches 'deadbeef'" in err


def test_accept_usage_errors(run, env):
    a = bytes([0xAB] * 4) + os.urandom(28)
    b = bytes([0xAB] * 4) + os.urandom(28)
    pend(env, ("mom", a, "x"), ("dad", b, "y"))
    code, out, err = run("accept", "abab")
    assert code == 2 and "at least 8 hex digits" in err
    code, out, err = run("accept", "abababab")
    assert code == 2 and "matches 2 pending keys" in err
    code, out, err = run("accept", a.hex()[:16], "--address", "not-an-address")
    assert code == 2 and out == "" and "not an e-mail address" in err
    assert env.book() == ()


def test_accept_with_an_address_already_taken_fails(run, env):
    run("add", "A", ID_A.hex(), "a@example.org")
    pend(env, ("mom", ID_C[:32], "x"))
    code, out, err = run("accept", ID_C[:32].hex()[:8], "--address", "a@example.org")
    assert code == 1 and out == "" and "already the address of 'A'" in err
    assert [c.name for c in env.book()] == ["A"]


# ---------------------------------------------------------------- friendships that end


def to_end(env: Env) -> list[tuple[str, bytes]]:
    roster = env.roster()
    try:
        return [(m, k) for m in MAILBOXES for k in roster.friendships_to_end(m)]
    finally:
        roster.close()


def test_removing_a_contact_asks_the_bridge_to_end_the_friendship(run, env):
    run("add", "Tarek", ID_A.hex(), "tarek@example.org", "--user", "mom")
    roster = env.roster()
    roster.learn("mom", "tarek.other@example.org", ID_A[:32])
    roster.close()
    code, out, err = run("remove", "Tarek")
    assert code == 0, err
    assert f"ending the Tox friendship of {ID_A.hex().upper()[:16]}… with mom" in out
    assert to_end(env) == [("mom", ID_A[:32])]
    roster = env.roster()
    assert roster.learned() == []  # what it learned goes with it
    roster.close()
    run("add", "Tarek", ID_A.hex(), "tarek@example.org")  # back before the bridge acted: kept
    assert to_end(env) == []


def test_a_key_still_serving_a_mailbox_stays_its_friend(run, env):
    run("add", "Tarek for mom", ID_A.hex(), "tarek@example.org", "--user", "mom")
    run("add", "Tarek for dad", ID_A.hex(), "t@example.org", "--user", "dad")
    assert run("remove", "Tarek for mom")[0] == 0
    assert to_end(env) == [("mom", ID_A[:32])]


def test_accepted_strangers_show_in_list_and_remove_ends_them(run, env):
    roster = env.roster()
    roster.add_accepted("dad", ID_C[:32], "hi")
    roster.add_accepted("dad", ID_B[:32], "hello")
    roster.close()
    strangers = [r for r in rows(run("list")[1]) if r[0] == "-"]
    assert [r[1:4] for r in strangers] == [
        ["-", ID_C[:32].hex().upper(), "dad"],
        ["-", ID_B[:32].hex().upper(), "dad"],
    ]
    assert all(r[4].startswith("accepted stranger ") and recent(r[4][18:-4]) for r in strangers)
    code, out, err = run("remove", ID_C.hex()[:7])
    assert code == 1 and "no contact, accepted stranger or learned address" in err  # 8 digits at least
    code, out, err = run("remove", ID_C.hex()[:10].upper())
    assert code == 0, err
    assert f"ending the Tox friendship of {ID_C.hex().upper()[:16]}… with dad" in out
    assert to_end(env) == [("dad", ID_C[:32])]
    assert [r[2] for r in rows(run("list")[1])] == [ID_B[:32].hex().upper()]


def test_pending_shows_a_strangers_text_escaped_on_one_line(run, env):
    hostile = "\x1b[2J\x1b]0;pwned\x07line\r\ndad\tDEADBEEF\tfake\u202eevil\\x1b" + "A" * 500
    pend(env, ("dad", ID_C[:32], hostile))
    code, out, err = run("pending")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and out.count("\t") == 6, out  # the header and one row of four columns
    assert all(c.isprintable() for c in lines[1].replace("\t", ""))
    message = lines[1].split("\t")[3]
    assert message.startswith("\\x1b[2J\\x1b]0;pwned\\x07line\\r\\ndad\\tDEADBEEF\\tfake\\u202eevil\\\\x1b")
    assert len(message) <= 201 and message.endswith("…")
