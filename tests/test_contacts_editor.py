"""Editing the contacts file as text (toxbridge/contacts/editor.py): entries added and removed
with every comment kept, layouts it cannot edit safely refused, the edit under a lock."""

from __future__ import annotations

import fcntl
import os

import pytest
from contacts_data import ID_A, ID_B, ID_C, ID_D, MAILBOXES, contact, full_id, parse
from hypothesis import given, settings
from hypothesis import strategies as st

from toxbridge.address import tox_checksum
from toxbridge.contacts import book as contacts
from toxbridge.contacts import editor
from toxbridge.contacts.book import Contact, ContactsError

# ---------------------------------------------------------------- editor.added / removed

COMMENTED = f"""\
# Contacts of the Example household.
# Keep this list sorted by name.

# --- family ---
- name: Tarek   # my brother
  # his work address too
  addresses:
    - tarek@example.org   # home
    - tarek@work.example  # work
  tox_id: {ID_A.hex().upper()}  # from his qTox
  users: [mom]
# comment between Tarek and Grandma
  # an indented comment between entries

- name: Grandma
  tox_id: {ID_B.hex()}
  # inside Grandma, at her end

# --- friends ---
- name: Zoë
  addresses: [zoe@example.org]
  tox_id: {ID_C.hex()}
# trailing comment at the end of the file
"""


def comment_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def test_added_keeps_every_comment_and_appends_the_entry():
    new = contact("Dora", ID_D, "dora@example.org", users=("dad", "kid"))
    result = editor.added(COMMENTED, "contacts.yaml", MAILBOXES, new)
    assert result.startswith(COMMENTED)  # untouched byte for byte, the entry goes at the end
    assert comment_lines(result) == comment_lines(COMMENTED)
    assert parse(result).contacts == parse(COMMENTED).contacts + (new,)
    assert parse(result).contacts[-1].line == COMMENTED.count("\n") + 1


def test_added_to_text_without_final_newline():
    text = COMMENTED.rstrip("\n")
    new = contact("Dora", ID_D)
    result = editor.added(text, "contacts.yaml", MAILBOXES, new)
    assert result.startswith(text + "\n- name: Dora\n")
    assert parse(result).contacts == parse(text).contacts + (new,)


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_added_to_empty_file_writes_the_header(text):
    new = contact("Tarek", ID_A, "tarek@example.org")
    result = editor.added(text, "contacts.yaml", MAILBOXES, new)
    assert result.startswith(editor.NEW_FILE_HEADER)
    assert parse(result).contacts == (new,)


def test_added_to_comment_only_file_keeps_the_comments():
    text = "# my own header\n# nobody yet"
    result = editor.added(text, "contacts.yaml", MAILBOXES, contact("A", ID_A))
    assert result.startswith(text + "\n") and editor.NEW_FILE_HEADER not in result


def test_removed_of_a_middle_entry_keeps_every_comment_outside_it():
    book = parse(COMMENTED)
    tarek, grandma, zoe = book.contacts
    result = editor.removed(COMMENTED, "contacts.yaml", MAILBOXES, grandma)
    assert parse(result).contacts == (tarek, zoe)
    assert "name: Grandma" not in result and ID_B.hex() not in result
    # its trailing comment is filler before the next entry, so it stays too
    assert comment_lines(result) == comment_lines(COMMENTED)


def test_removed_of_the_first_entry():
    tarek, grandma, zoe = parse(COMMENTED).contacts
    result = editor.removed(COMMENTED, "contacts.yaml", MAILBOXES, tarek)
    assert parse(result).contacts == (grandma, zoe)
    # comments above it and after its last key stay; the ones inside it go
    kept = comment_lines(result)
    assert "# --- family ---" in kept and "# comment between Tarek and Grandma" in kept
    assert "  # his work address too" not in kept
    assert kept == [c for c in comment_lines(COMMENTED) if c != "  # his work address too"]


def test_removed_of_the_last_entry_keeps_the_trailing_comment():
    tarek, grandma, zoe = parse(COMMENTED).contacts
    result = editor.removed(COMMENTED, "contacts.yaml", MAILBOXES, zoe)
    assert parse(result).contacts == (tarek, grandma)
    assert result.endswith("# --- friends ---\n# trailing comment at the end of the file\n")
    assert comment_lines(result) == comment_lines(COMMENTED)


@pytest.mark.parametrize("index", range(3))
def test_removed_cuts_only_that_entrys_lines(index):
    """At every entry: what is left is the original minus one contiguous block of lines."""
    before = parse(COMMENTED).contacts
    result = editor.removed(COMMENTED, "contacts.yaml", MAILBOXES, before[index])
    assert parse(result).contacts == before[:index] + before[index + 1 :]
    old, new = COMMENTED.splitlines(keepends=True), result.splitlines(keepends=True)
    head = next(i for i, (a, b) in enumerate(zip(old + [None], new + [None], strict=False)) if a != b)
    assert old[:head] == new[:head] and old[head + len(old) - len(new) :] == new[head:]
    assert old[head].startswith("- name:")  # the cut starts at the entry itself


def test_removed_the_only_entry_leaves_the_comments():
    text = f"# header\n- name: A\n  tox_id: {ID_A.hex()}\n# footer\n"
    result = editor.removed(text, "contacts.yaml", MAILBOXES, parse(text).contacts[0])
    assert result == "# header\n# footer\n"
    assert parse(result).contacts == ()


def test_add_then_remove_gives_back_the_file():
    new = contact("Dora", ID_D, "dora@example.org")
    grown = editor.added(COMMENTED, "contacts.yaml", MAILBOXES, new)
    assert editor.removed(grown, "contacts.yaml", MAILBOXES, new) == COMMENTED


def test_add_after_remove_of_another_entry_keeps_every_comment():
    tarek, grandma, zoe = parse(COMMENTED).contacts
    text = editor.removed(COMMENTED, "contacts.yaml", MAILBOXES, grandma)
    new = contact("Dora", ID_D, "dora@example.org")
    text = editor.added(text, "contacts.yaml", MAILBOXES, new)
    assert parse(text).contacts == (tarek, zoe, new)
    assert comment_lines(text) == comment_lines(COMMENTED)


def test_unicode_names_added_and_removed():
    names = ["Zoë", "Ŝtefan Łukasz", "山田 太郎", "Ελένη", "👵 Granny"]
    text = ""
    added = []
    for i, name in enumerate(names):
        c = contact(name, full_id(0xA0 + i), f"p{i}@example.org")
        text = editor.added(text, "contacts.yaml", MAILBOXES, c)
        added.append(c)
    assert "山田 太郎" in text  # written as the person typed it, not escaped
    assert parse(text).contacts == tuple(added)
    text = editor.removed(text, "contacts.yaml", MAILBOXES, added[2])
    assert [c.name for c in parse(text).contacts] == ["Zoë", "Ŝtefan Łukasz", "Ελένη", "👵 Granny"]


def test_names_yaml_would_misread_are_quoted():
    for i, name in enumerate(["yes", "null", "123", "- dash", "# hash", "a: b", "[x]", "'quoted'"]):
        c = contact(name, full_id(0xA0 + i))
        assert parse(editor.added("", "contacts.yaml", MAILBOXES, c)).contacts == (c,)


FLOW = f"[ {{name: A, tox_id: {ID_A.hex()}}},\n  {{name: B, tox_id: {ID_B.hex()}}} ]\n"


def test_flow_style_file_is_refused_for_add():
    with pytest.raises(ContactsError, match="contacts.yaml: .*edit it by hand"):
        editor.added(FLOW, "contacts.yaml", MAILBOXES, contact("C", ID_C, "c@example.org"))


@pytest.mark.parametrize("index", range(2))
def test_flow_style_file_is_refused_for_remove(index):
    gone = parse(FLOW).contacts[index]
    with pytest.raises(ContactsError, match="edit it by hand"):
        editor.removed(FLOW, "contacts.yaml", MAILBOXES, gone)


@pytest.mark.parametrize(
    "text",
    [
        f"  - name: A\n    tox_id: {ID_A.hex()}\n",  # indented list
        f"- name: A\n  tox_id: {ID_A.hex()}\n...\n",  # document end marker
        "[]\n",
    ],
)
def test_unusual_layouts_are_refused_for_add(text):
    with pytest.raises(ContactsError, match="edit it by hand"):
        editor.added(text, "contacts.yaml", MAILBOXES, contact("C", ID_C))


def test_dash_on_its_own_line_is_refused_for_remove():
    text = f"-\n  name: A\n  tox_id: {ID_A.hex()}\n- name: B\n  tox_id: {ID_B.hex()}\n"
    a, b = parse(text).contacts
    with pytest.raises(ContactsError, match="edit it by hand"):  # the cut would leave a bare "-"
        editor.removed(text, "contacts.yaml", MAILBOXES, a)
    assert editor.removed(text, "contacts.yaml", MAILBOXES, b) == f"-\n  name: A\n  tox_id: {ID_A.hex()}\n"


def test_duplicate_address_gives_the_duplicate_error_not_the_layout_one():
    dup = contact("Impostor", ID_D, "someone@example.org", "TAREK@example.org")
    with pytest.raises(ContactsError) as caught:
        editor.added(COMMENTED, "contacts.yaml", MAILBOXES, dup)
    message = str(caught.value)
    assert "tarek@example.org is already the address of 'Tarek' (line 5)" in message
    assert "by hand" not in message


def test_added_refuses_when_the_file_is_already_broken():
    with pytest.raises(ContactsError, match="line 2: entry has no tox_id"):
        editor.added("# x\n- name: A\n", "contacts.yaml", MAILBOXES, contact("C", ID_C))


def test_added_refuses_an_entry_the_book_cannot_hold():
    stranger = contact("C", ID_C, users=("grandpa",))
    with pytest.raises(ContactsError, match="'grandpa' is not a user"):
        editor.added("", "contacts.yaml", MAILBOXES, stranger)


_names = (
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20)
    .map(str.strip)
    .filter(bool)
)
_local = st.from_regex(r"[a-z0-9+_-]{1,5}(\.[a-z0-9+_-]{1,4})?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    name=_names,
    key=st.binary(min_size=32, max_size=32),
    full=st.booleans(),
    locals_=st.lists(_local, max_size=3, unique=True),
    users=st.lists(st.sampled_from(MAILBOXES), max_size=3, unique=True),
)
def test_added_then_removed_property(name, key, full, locals_, users):
    tox_id = key + b"\0\0\0\0" + tox_checksum(key + b"\0\0\0\0") if full else None
    new = Contact(name, tuple(f"{lp}@new.example" for lp in locals_), key, tox_id, tuple(users))
    grown = editor.added(COMMENTED, "contacts.yaml", MAILBOXES, new)
    assert parse(grown).contacts == parse(COMMENTED).contacts + (new,)
    assert editor.removed(grown, "contacts.yaml", MAILBOXES, new) == COMMENTED


# ---------------------------------------------------------------- edit, locked


def test_edit_applies_change_under_the_lock(tmp_path):
    path = tmp_path / "etc" / "contacts.yaml"  # the directory is made
    new = contact("Tarek", ID_A, "tarek@example.org")
    seen = []

    def change(text: str, source: str) -> str:
        seen.append((text, source))
        other = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:  # a second editor cannot take the lock now
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        return editor.added(text, source, MAILBOXES, new)

    book = editor.edit(path, MAILBOXES, change)
    assert seen == [("", str(path))]
    assert book.contacts == (new,) and book.source == str(path)
    assert contacts.load(path, MAILBOXES).contacts == (new,)
    # the lock is released afterwards
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_edit_writes_nothing_when_the_change_is_refused(tmp_path):
    path = tmp_path / "contacts.yaml"
    path.write_text(FLOW)
    path.chmod(0o600)
    before = path.stat()
    with pytest.raises(ContactsError, match="edit it by hand"):
        editor.edit(
            path, MAILBOXES, lambda text, source: editor.added(text, source, MAILBOXES, contact("C", ID_C))
        )
    assert path.read_text() == FLOW
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.yaml"]


def test_read_text(tmp_path):
    assert editor.read_text(tmp_path / "none.yaml") == ""
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ContactsError, match="cannot read the contacts file"):
        editor.read_text(path)
