"""The contacts book (parsing, validation, lookups) and the text-level edits of its file."""

from __future__ import annotations

import fcntl
import os

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from toxbridge.contacts import book as contacts, editor
from toxbridge.address import AddressError, tox_checksum
from toxbridge.contacts.book import Contact, ContactBook, ContactsError

MAILBOXES = ("mom", "dad", "kid")


def full_id(byte: int, nospam: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A valid 38-byte Tox ID whose key is `byte` repeated (a0.. keeps YAML from reading a number)."""
    key = bytes([byte]) * 32
    return key + nospam + tox_checksum(key + nospam)


ID_A, ID_B, ID_C, ID_D = (full_id(b) for b in (0xA1, 0xB2, 0xC3, 0xD4))


def parse(text: str) -> ContactBook:
    return contacts.parse(text, "contacts.yaml", MAILBOXES)


def contact(name: str, tox_id: bytes, *addresses: str, users: tuple[str, ...] = ()) -> Contact:
    return Contact(name, tuple(addresses), tox_id[:32], tox_id, users)


# ---------------------------------------------------------------- parse_tox_id, check_address


def test_parse_tox_id_full_id_any_case_and_whitespace_around():
    for text in (ID_A.hex(), ID_A.hex().upper(), f"  {ID_A.hex()}\n"):
        assert contacts.parse_tox_id(text) == (ID_A[:32], ID_A)


def test_parse_tox_id_public_key_only():
    key = os.urandom(32)
    assert contacts.parse_tox_id(key.hex().upper()) == (key, None)


@pytest.mark.parametrize("text, error", [
    (ID_A.hex()[:-1] + ("0" if ID_A.hex()[-1] != "0" else "1"), "checksum"),
    ("z" * 76, "not hexadecimal"),
    ("z" * 64, "not hexadecimal"),
    ("a" * 63, "not 63"),
    ("a" * 75, "not 75"),
    ("a" * 77, "not 77"),
    ("", "not 0"),
])
def test_parse_tox_id_refuses(text, error):
    with pytest.raises(AddressError, match=error):
        contacts.parse_tox_id(text)


def test_parse_tox_id_refuses_inner_whitespace_in_public_key():
    with pytest.raises(AddressError):
        contacts.parse_tox_id("ab" * 30 + "  " + "ab")


@given(key=st.binary(min_size=32, max_size=32), nospam=st.binary(min_size=4, max_size=4),
       upper=st.booleans())
def test_parse_tox_id_property(key, nospam, upper):
    tox_id = key + nospam + tox_checksum(key + nospam)
    text = tox_id.hex().upper() if upper else tox_id.hex()
    assert contacts.parse_tox_id(text) == (key, tox_id)
    assert contacts.parse_tox_id(text[:64]) == (key, None)
    # any single wrong digit in the checksum is caught
    wrong = text[:-1] + ("1" if text[-1] == "0" else "0")
    with pytest.raises(AddressError, match="checksum"):
        contacts.parse_tox_id(wrong)


@pytest.mark.parametrize("given_, normal", [
    ("tarek@example.org", "tarek@example.org"),
    ("  Tarek@Example.ORG\n", "tarek@example.org"),
    ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
])
def test_check_address_normalises(given_, normal):
    assert contacts.check_address(given_) == normal


@pytest.mark.parametrize("address, error", [
    ("a" * 64 + "@tox", "need no contact"),
    ("A" * 64 + "@TOX", "need no contact"),
    ("tarek", "not an e-mail address"),
    ("tarek@localhost", "not an e-mail address"),
    ("@example.org", "not an e-mail address"),
    ("a@b@example.org", "not an e-mail address"),
    ("Tarek <tarek@example.org>", "not an e-mail address"),
    ("tar ek@example.org", "not an e-mail address"),
    ("", "not an e-mail address"),
])
def test_check_address_refuses(address, error):
    with pytest.raises(ValueError, match=error):
        contacts.check_address(address)


# ---------------------------------------------------------------- parsing the book

BOOK = f"""\
# our people
- name: Tarek
  addresses: [Tarek@Example.org, t@example.net]
  tox_id: {ID_A.hex().upper()}
  users: [mom]
- name: Grandma
  addresses: granny@example.org
  tox_id: {ID_B.hex()[:64]}
- name: Zoë Ŝmith
  tox_id: {ID_C.hex()}
  users: [mom, kid]
"""


def test_parse_book():
    book = parse(BOOK)
    tarek, grandma, zoe = book.contacts
    assert book.source == "contacts.yaml"
    assert tarek == Contact("Tarek", ("tarek@example.org", "t@example.net"), ID_A[:32], ID_A, ("mom",))
    assert tarek.line == 2
    assert grandma == Contact("Grandma", ("granny@example.org",), ID_B[:32], None, ())
    assert grandma.line == 6
    assert (zoe.name, zoe.addresses, zoe.users, zoe.line) == ("Zoë Ŝmith", (), ("mom", "kid"), 9)


def test_empty_and_comment_only_files_are_empty_books():
    for text in ("", "\n", "# nobody yet\n", "[]\n"):
        assert parse(text).contacts == ()


def test_duplicate_address_inside_one_entry_is_kept_once():
    book = parse(f"- name: A\n  addresses: [a@x.org, A@X.org]\n  tox_id: {ID_A.hex()}\n")
    assert book.contacts[0].addresses == ("a@x.org",)


def test_name_is_stripped():
    assert parse(f"- name: '  A  '\n  tox_id: {ID_A.hex()}\n").contacts[0].name == "A"


@pytest.mark.parametrize("text, error", [
    ("name: A\n", "contacts.yaml: the contacts file must be a list"),
    ("just text\n", "contacts.yaml: the contacts file must be a list"),
    (f"- name: A\n  tox_id: {ID_A.hex()}\n- oops\n", "contacts.yaml: entry 2: expected name"),
    (f"- name: A\n  tox_id: {ID_A.hex()}\n  phone: 123\n", "contacts.yaml: line 3: phone: unknown key"),
    (f"- name: A\n\n  tox_id: {ID_A.hex()}\n  addresses: [a@x.org]\n  users: [mom, grandpa]\n",
     "contacts.yaml: line 5: users: 'grandpa' is not a user of this bridge"),
    (f"- name: A\n  tox_id: {ID_A.hex()}\n  users: []\n", "contacts.yaml: line 3: users: an empty list serves nobody"),
    (f"- name: A\n  tox_id: {ID_A.hex()}\n  users: [1]\n", "contacts.yaml: line 3: users: expected a list"),
    ("- name: A\n  addresses: [a@x.org]\n", "contacts.yaml: line 1: entry has no tox_id"),
    (f"# c\n- tox_id: {ID_A.hex()}\n", "contacts.yaml: line 2: entry has no name"),
    (f"- name: ''\n  tox_id: {ID_A.hex()}\n", "contacts.yaml: line 1: name: expected a non-empty text"),
    (f"- name: 12\n  tox_id: {ID_A.hex()}\n", "contacts.yaml: line 1: name: expected a non-empty text"),
    ("- name: A\n  tox_id: 12\n", "contacts.yaml: line 2: tox_id: expected a non-empty text"),
    (f"- name: A\n  tox_id: {ID_A.hex()[:-2]}00\n", "contacts.yaml: line 2: tox_id: Tox ID checksum"),
    ("- name: A\n  tox_id: abc\n", "contacts.yaml: line 2: tox_id: a Tox ID has 76 hex digits"),
    (f"- name: A\n  tox_id: {ID_A.hex()}\n  addresses: {{a: b}}\n",
     "contacts.yaml: line 3: addresses: expected a list"),
    (f"- name: A\n  tox_id: {ID_A.hex()}\n  addresses: [nobody]\n",
     "contacts.yaml: line 3: addresses: 'nobody' is not an e-mail address"),
    (f"- name: A\n  tox_id: {ID_A.hex()}\n  addresses: [{'b' * 64}@tox]\n",
     "contacts.yaml: line 3: addresses: .*need no contact"),
    (f"- name: A\n  name: B\n  tox_id: {ID_A.hex()}\n", "contacts.yaml: line 2: key 'name' appears twice"),
    ("- name: [unclosed\n", "contacts.yaml: line 2: not valid YAML"),
])
def test_parse_errors_name_file_and_line(text, error):
    with pytest.raises(ContactsError, match=error):
        parse(text)


def test_duplicate_address_across_entries_names_both_lines():
    text = (f"- name: A\n  addresses: [a@x.org]\n  tox_id: {ID_A.hex()}\n"
            f"- name: B\n  addresses: [b@x.org, A@x.org]\n  tox_id: {ID_B.hex()}\n")
    with pytest.raises(ContactsError) as caught:
        parse(text)
    assert str(caught.value) == ("contacts.yaml: line 4: a@x.org is already the address of 'A' (line 1)")


def test_contacts_error_is_a_config_error():
    from toxbridge.config import ConfigError
    assert issubclass(ContactsError, ConfigError)


def test_load_missing_file_is_empty_book(tmp_path):
    book = contacts.load(tmp_path / "nope.yaml", MAILBOXES)
    assert book.contacts == () and book.source == str(tmp_path / "nope.yaml")


def test_load_reads_file_and_names_it_in_errors(tmp_path):
    path = tmp_path / "contacts.yaml"
    path.write_text(BOOK, encoding="utf-8")
    assert [c.name for c in contacts.load(path, MAILBOXES).contacts] == ["Tarek", "Grandma", "Zoë Ŝmith"]
    path.write_text("- name: A\n", encoding="utf-8")
    with pytest.raises(ContactsError, match=f"^{path}: line 1: entry has no tox_id"):
        contacts.load(path, MAILBOXES)


def test_load_refuses_non_utf8_and_unreadable(tmp_path):
    path = tmp_path / "contacts.yaml"
    path.write_bytes(b"- name: Zo\xeb\n")
    with pytest.raises(ContactsError, match=f"^{path}: the contacts file is not UTF-8"):
        contacts.load(path, MAILBOXES)
    with pytest.raises(ContactsError, match=f"^{tmp_path}: cannot read the contacts file"):
        contacts.load(tmp_path, MAILBOXES)  # a directory


# ---------------------------------------------------------------- lookups


@pytest.fixture
def book() -> ContactBook:
    return parse(BOOK)


def test_owner_any_case_and_whitespace(book):
    assert book.owner("tarek@example.org").name == "Tarek"
    assert book.owner(" T@EXAMPLE.NET ").name == "Tarek"
    assert book.owner("granny@example.org").name == "Grandma"
    assert book.owner("nobody@example.org") is None
    assert book.owner("Tarek") is None  # a name is not an address


def test_serves_and_for_user(book):
    tarek, grandma, zoe = book.contacts
    assert tarek.serves("mom") and not tarek.serves("dad")
    assert grandma.serves("mom") and grandma.serves("dad") and grandma.serves("anyone")
    assert book.for_user("mom") == [tarek, grandma, zoe]
    assert book.for_user("dad") == [grandma]
    assert book.for_user("kid") == [grandma, zoe]


def test_with_key(book):
    assert [c.name for c in book.with_key(ID_A[:32])] == ["Tarek"]
    assert [c.name for c in book.with_key(ID_B[:32])] == ["Grandma"]  # known by key only
    assert book.with_key(ID_D[:32]) == []
    assert book.with_key(ID_A) == []  # the full ID is not the key


def test_with_key_finds_every_entry_of_a_key():
    text = (f"- name: A\n  tox_id: {ID_A.hex()}\n  users: [mom]\n"
            f"- name: A for dad\n  tox_id: {ID_A.hex()[:64]}\n  users: [dad]\n")
    assert [c.name for c in parse(text).with_key(ID_A[:32])] == ["A", "A for dad"]


@pytest.mark.parametrize("what, names", [
    ("Tarek", ["Tarek"]),
    ("  tAREK ", ["Tarek"]),
    ("zoë ŝmith", ["Zoë Ŝmith"]),
    ("T@Example.NET", ["Tarek"]),
    (ID_A.hex()[:8], ["Tarek"]),
    (ID_A.hex()[:8].upper(), ["Tarek"]),
    (ID_A.hex(), ["Tarek"]),  # the whole ID
    (ID_B.hex()[:64], ["Grandma"]),
    (ID_A.hex()[:7], []),  # too short to be a key prefix
    ("Tar", []),  # names match whole
    ("nobody@example.org", []),
    ("", []),
])
def test_find(book, what, names):
    assert [c.name for c in book.find(what)] == names


def test_find_prefix_shared_by_two_keys():
    a = full_id(0xAB)
    b = a[:4] + bytes([0xCD]) * 28 + b"\x01\x02\x03\x04"
    b = b + tox_checksum(b)
    text = f"- name: A\n  tox_id: {a.hex()}\n- name: B\n  tox_id: {b.hex()}\n"
    book = parse(text)
    assert [c.name for c in book.find(a.hex()[:8])] == ["A", "B"]
    assert [c.name for c in book.find(a.hex()[:10])] == ["A"]


def test_as_yaml_round_trips():
    for c in (contact("Tarek", ID_A, "tarek@example.org", users=("mom",)),
              Contact("Key only", (), ID_B[:32], None, ())):
        entry = c.as_yaml()
        assert entry["tox_id"] == (c.tox_id or c.public_key).hex().upper()
        assert ("users" in entry) == bool(c.users)
        assert parse(yaml.safe_dump([entry])).contacts == (c,)


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
    assert parse(result).contacts == before[:index] + before[index + 1:]
    old, new = COMMENTED.splitlines(keepends=True), result.splitlines(keepends=True)
    head = next(i for i, (a, b) in enumerate(zip(old + [None], new + [None])) if a != b)
    assert old[:head] == new[:head] and old[head + len(old) - len(new):] == new[head:]
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


@pytest.mark.parametrize("text", [
    f"  - name: A\n    tox_id: {ID_A.hex()}\n",  # indented list
    f"- name: A\n  tox_id: {ID_A.hex()}\n...\n",  # document end marker
    "[]\n",
])
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


_names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20) \
    .map(str.strip).filter(bool)
_local = st.from_regex(r"[a-z0-9+_-]{1,5}(\.[a-z0-9+_-]{1,4})?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(name=_names, key=st.binary(min_size=32, max_size=32), full=st.booleans(),
       locals_=st.lists(_local, max_size=3, unique=True),
       users=st.lists(st.sampled_from(MAILBOXES), max_size=3, unique=True))
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
        editor.edit(path, MAILBOXES,
                           lambda text, source: editor.added(text, source, MAILBOXES, contact("C", ID_C)))
    assert path.read_text() == FLOW
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.yaml"]


def test_read_text(tmp_path):
    assert editor.read_text(tmp_path / "none.yaml") == ""
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ContactsError, match="cannot read the contacts file"):
        editor.read_text(path)

