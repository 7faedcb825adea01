"""The contacts book: parsing, validation, lookups (its file's edits: test_contacts_editor.py)."""

from __future__ import annotations

import os

import pytest
import yaml
from contacts_data import ID_A, ID_B, ID_C, ID_D, MAILBOXES, contact, full_id, parse
from hypothesis import given
from hypothesis import strategies as st

from toxbridge.address import AddressError, tox_checksum
from toxbridge.contacts import book as contacts
from toxbridge.contacts.book import Contact, ContactBook, ContactsError

# ---------------------------------------------------------------- parse_tox_id, check_address


def test_parse_tox_id_full_id_any_case_and_whitespace_around():
    for text in (ID_A.hex(), ID_A.hex().upper(), f"  {ID_A.hex()}\n"):
        assert contacts.parse_tox_id(text) == (ID_A[:32], ID_A)


def test_parse_tox_id_public_key_only():
    key = os.urandom(32)
    assert contacts.parse_tox_id(key.hex().upper()) == (key, None)


@pytest.mark.parametrize(
    "text, error",
    [
        (ID_A.hex()[:-1] + ("0" if ID_A.hex()[-1] != "0" else "1"), "checksum"),
        ("z" * 76, "not hexadecimal"),
        ("z" * 64, "not hexadecimal"),
        ("a" * 63, "not 63"),
        ("a" * 75, "not 75"),
        ("a" * 77, "not 77"),
        ("", "not 0"),
    ],
)
def test_parse_tox_id_refuses(text, error):
    with pytest.raises(AddressError, match=error):
        contacts.parse_tox_id(text)


def test_parse_tox_id_refuses_inner_whitespace_in_public_key():
    with pytest.raises(AddressError):
        contacts.parse_tox_id("ab" * 30 + "  " + "ab")


@given(key=st.binary(min_size=32, max_size=32), nospam=st.binary(min_size=4, max_size=4), upper=st.booleans())
def test_parse_tox_id_property(key, nospam, upper):
    tox_id = key + nospam + tox_checksum(key + nospam)
    text = tox_id.hex().upper() if upper else tox_id.hex()
    assert contacts.parse_tox_id(text) == (key, tox_id)
    assert contacts.parse_tox_id(text[:64]) == (key, None)
    # any single wrong digit in the checksum is caught
    wrong = text[:-1] + ("1" if text[-1] == "0" else "0")
    with pytest.raises(AddressError, match="checksum"):
        contacts.parse_tox_id(wrong)


@pytest.mark.parametrize(
    "given_, normal",
    [
        ("tarek@example.org", "tarek@example.org"),
        ("  Tarek@Example.ORG\n", "tarek@example.org"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ],
)
def test_check_address_normalises(given_, normal):
    assert contacts.check_address(given_) == normal


@pytest.mark.parametrize(
    "address, error",
    [
        ("a" * 64 + "@tox", "need no contact"),
        ("A" * 64 + "@TOX", "need no contact"),
        ("tarek", "not an e-mail address"),
        ("tarek@localhost", "not an e-mail address"),
        ("@example.org", "not an e-mail address"),
        ("a@b@example.org", "not an e-mail address"),
        ("Tarek <tarek@example.org>", "not an e-mail address"),
        ("tar ek@example.org", "not an e-mail address"),
        ("", "not an e-mail address"),
    ],
)
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


@pytest.mark.parametrize(
    "text, error",
    [
        ("name: A\n", "contacts.yaml: the contacts file must be a list"),
        ("just text\n", "contacts.yaml: the contacts file must be a list"),
        (f"- name: A\n  tox_id: {ID_A.hex()}\n- oops\n", "contacts.yaml: entry 2: expected name"),
        (f"- name: A\n  tox_id: {ID_A.hex()}\n  phone: 123\n", "contacts.yaml: line 3: phone: unknown key"),
        (
            f"- name: A\n\n  tox_id: {ID_A.hex()}\n  addresses: [a@x.org]\n  users: [mom, grandpa]\n",
            "contacts.yaml: line 5: users: 'grandpa' is not a user of this bridge",
        ),
        (
            f"- name: A\n  tox_id: {ID_A.hex()}\n  users: []\n",
            "contacts.yaml: line 3: users: an empty list serves nobody",
        ),
        (
            f"- name: A\n  tox_id: {ID_A.hex()}\n  users: [1]\n",
            "contacts.yaml: line 3: users: expected a list",
        ),
        ("- name: A\n  addresses: [a@x.org]\n", "contacts.yaml: line 1: entry has no tox_id"),
        (f"# c\n- tox_id: {ID_A.hex()}\n", "contacts.yaml: line 2: entry has no name"),
        (f"- name: ''\n  tox_id: {ID_A.hex()}\n", "contacts.yaml: line 1: name: expected a non-empty text"),
        (f"- name: 12\n  tox_id: {ID_A.hex()}\n", "contacts.yaml: line 1: name: expected a non-empty text"),
        ("- name: A\n  tox_id: 12\n", "contacts.yaml: line 2: tox_id: expected a non-empty text"),
        (f"- name: A\n  tox_id: {ID_A.hex()[:-2]}00\n", "contacts.yaml: line 2: tox_id: Tox ID checksum"),
        ("- name: A\n  tox_id: abc\n", "contacts.yaml: line 2: tox_id: a Tox ID has 76 hex digits"),
        (
            f"- name: A\n  tox_id: {ID_A.hex()}\n  addresses: {{a: b}}\n",
            "contacts.yaml: line 3: addresses: expected a list",
        ),
        (
            f"- name: A\n  tox_id: {ID_A.hex()}\n  addresses: [nobody]\n",
            "contacts.yaml: line 3: addresses: 'nobody' is not an e-mail address",
        ),
        (
            f"- name: A\n  tox_id: {ID_A.hex()}\n  addresses: [{'b' * 64}@tox]\n",
            "contacts.yaml: line 3: addresses: .*need no contact",
        ),
        (
            f"- name: A\n  name: B\n  tox_id: {ID_A.hex()}\n",
            "contacts.yaml: line 2: key 'name' appears twice",
        ),
        ("- name: [unclosed\n", "contacts.yaml: line 2: not valid YAML"),
    ],
)
def test_parse_errors_name_file_and_line(text, error):
    with pytest.raises(ContactsError, match=error):
        parse(text)


def test_duplicate_address_across_entries_names_both_lines():
    text = (
        f"- name: A\n  addresses: [a@x.org]\n  tox_id: {ID_A.hex()}\n"
        f"- name: B\n  addresses: [b@x.org, A@x.org]\n  tox_id: {ID_B.hex()}\n"
    )
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
    text = (
        f"- name: A\n  tox_id: {ID_A.hex()}\n  users: [mom]\n"
        f"- name: A for dad\n  tox_id: {ID_A.hex()[:64]}\n  users: [dad]\n"
    )
    assert [c.name for c in parse(text).with_key(ID_A[:32])] == ["A", "A for dad"]


@pytest.mark.parametrize(
    "what, names",
    [
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
    ],
)
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
    for c in (
        contact("Tarek", ID_A, "tarek@example.org", users=("mom",)),
        Contact("Key only", (), ID_B[:32], None, ()),
    ):
        entry = c.as_yaml()
        assert entry["tox_id"] == (c.tox_id or c.public_key).hex().upper()
        assert ("users" in entry) == bool(c.users)
        assert parse(yaml.safe_dump([entry])).contacts == (c,)
