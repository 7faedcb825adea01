"""What `make demo` prints for a new user (the demo itself runs in CI's fresh root)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from toxbridge.lab import demo
from toxbridge.lab.household import Household


class FakeHome(SimpleNamespace):
    def address(self, user: str) -> str:
        return f"{user}@{self.name}.test"

    def tox_address(self, user: str) -> str:
        return "AB" * 38 + "@tox"


def test_account_table_is_aligned_and_says_how_to_reach_each_household(capsys):
    homes = [
        FakeHome(
            name=name,
            users={name: f"{name}-pw"},
            bridge_users=[name],
            dovecot=SimpleNamespace(imap_port=20001, pop3_port=31234),
            postfix=SimpleNamespace(smtp_port=25000 + i),
            contacts_path=f"/demo/{name}/contacts.yaml",
            config_path=f"/demo/{name}/toxbridge.yaml",
        )
        for i, name in enumerate(["alice", "christopher"])
    ]
    demo._print_accounts(cast("list[Household]", homes))  # stand-ins with what the table reads
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["user", "address"])
    rows = [line for line in lines if "127.0.0.1:" in line]
    assert len(rows) == 2
    for column in ("address", "password", "IMAP", "POP3", "SMTP"):
        start = header.index(column)
        for row in rows:  # every value starts under its heading
            assert row[start - 1] == " " and row[start] != " ", (column, row)
    for home in homes:
        assert f"--config /demo/{home.name}/toxbridge.yaml status" in "\n".join(lines)
    assert "friend_requests: pending" in "\n".join(lines)
