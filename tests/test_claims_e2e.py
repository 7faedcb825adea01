"""Issue 15.4 with real bridges: a friend's first mail cannot take the household's own domain
or an address the household already mailed by the ordinary route."""

from __future__ import annotations

import smtplib
import uuid

import pytest
from test_contacts_e2e import bounce_for, compose, lookup

from toxbridge.contacts.roster import Roster
from toxbridge.lab.ports import wait_until

pytestmark = pytest.mark.integration


def test_a_friend_cannot_take_an_own_domain_address(network):
    alice, bob = network["alice"], network["bob"]
    mid, msg = compose("Helpdesk <helpdesk@bob.test>", bob.tox_address("bob"), "own domain")
    alice.postfix.send("alice@alice.test", [bob.tox_address("bob")], msg)
    bounce = bounce_for(alice, "alice", mid)
    assert "5.7.1" in bounce and "helpdesk@bob.test is no Tox friend's to claim" in bounce


def test_a_friend_cannot_take_an_address_bob_mailed_by_the_ordinary_route(network):
    alice, bob = network["alice"], network["bob"]
    bank = f"support-{uuid.uuid4().hex[:8]}@bank.example"
    _, msg = compose("bob@bob.test", bank, "to the bank, the ordinary way")
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # the lab sends nothing beyond the machine,
        bob.postfix.send("bob@bob.test", [bank], msg)  # but Postfix asked the route first
    roster = Roster(bob.root / "state" / "roster.sqlite")
    try:
        assert wait_until(lambda: roster.is_ordinary(bank), 5, interval=0.1)
    finally:
        roster.close()
    mid, msg = compose(f"Bank <{bank}>", bob.tox_address("bob"), "I am the bank now")
    alice.postfix.send(alice.address("alice"), [bob.tox_address("bob")], msg)
    bounce = bounce_for(alice, "alice", mid)
    assert "5.7.1" in bounce and "ordinary route" in bounce
    assert lookup(bob, bank) is None  # bob's later mail to the bank still takes the ordinary route
