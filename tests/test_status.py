"""The judging half of `toxbridge status`: observations in, checks out (no servers)."""

from __future__ import annotations

import time
from pathlib import Path

from toxbridge import config as config_mod
from toxbridge.ops import status
from toxbridge.ops.status import ERROR, OK, WARN

CONFIG = config_mod.parse(
    "state_dir: /var/lib/toxbridge\nusers: [{mailbox: mom, address: mom@home.example}]\n"
    "tox: {bootstrap: [{host: 127.0.0.1, port: 33445, public_key: '" + "ab" * 32 + "'}]}\n",
    "/etc/tb.yaml",
)
NOW = 1_800_000_000.0


def identity(network="UDP", friends=()):
    return {
        "mailbox": "mom",
        "address": "mom@home.example",
        "tox_id": "AB" * 38,
        "network": network,
        "network_since": NOW - 60,
        "friends": list(friends),
    }


def friend(online, since, bridge=True, name="Tarek", chat_app=False):
    return {
        "chat_app": chat_app,
        "key": "12345678" * 8,
        "name": name,
        "online": online,
        "via": "UDP" if online else "",
        "since": since,
        "bridge": bridge,
    }


def test_daemon_down_is_an_error_that_says_how_to_start_it():
    check = status.daemon_check(None, CONFIG, NOW)
    assert (
        check.level == ERROR and "not running" in check.text and "systemctl start toxbridge" in check.action
    )


def test_routes_is_up_when_either_of_its_listeners_answers():
    refused = "Connection refused"
    assert status.routes_check(CONFIG, None, refused).level == OK
    assert status.routes_check(CONFIG, refused, None).level == OK
    down = status.routes_check(CONFIG, refused, refused)
    assert down.level == ERROR and "451 4.3.0" in down.text
    assert "systemctl start toxbridge-routes" in down.action


def test_a_down_listener_names_the_process_to_start():
    from toxbridge.config import Endpoint

    sock = Endpoint(path="/var/spool/postfix/toxbridge/socketmap")
    check = status.listener_check(
        "socketmap", "socketmap_listen", sock, "Connection refused", False, "toxbridge-routes"
    )
    assert check.level == ERROR and check.action == "start toxbridge-routes"


def test_daemon_up_says_pid_uptime_and_mail_on_its_way():
    check = status.daemon_check({"pid": 7, "started": NOW - 7200, "contacts": 3, "in_flight": 1}, CONFIG, NOW)
    assert (
        check.level == OK
        and "pid 7" in check.text
        and "up 2 h" in check.text
        and "1 mails on their way" in check.text
    )


def test_off_the_tox_network_names_the_bootstrap_nodes_and_the_small_network_trap():
    (check,) = status.identity_checks(identity(network=""), CONFIG, NOW)
    assert check.level == ERROR and "127.0.0.1:33445" in check.action and "tcp_relays" in check.action
    # nodes that all answer and still offline: the family's own network is too small for toxcore
    assert "at least 7 that stay on" in check.action and "public bootstrap nodes" in check.action


def test_friends_online_offline_and_never_seen():
    checks = status.identity_checks(
        identity(
            friends=[
                friend(True, NOW - 30),
                friend(False, NOW - 3 * 3600),
                friend(False, None, name=None),
                friend(True, None, bridge=False),
                friend(True, NOW - 5, bridge=False, chat_app=True),
                friend(False, NOW - 60, bridge=False, chat_app=True),
            ]
        ),
        CONFIG,
        NOW,
    )
    levels = [c.level for c in checks[1:]]
    assert levels == [OK, WARN, WARN, OK, OK, WARN]
    assert "a Tox chat app (no bridge): its messages arrive as mail" in checks[5].text
    assert "(a Tox chat app) offline since" in checks[6].text and "as chat messages" in checks[6].action
    assert "their bridge" not in checks[6].action
    assert "online via UDP since" in checks[1].text and "(30 s ago)" in checks[1].text
    assert (
        "offline since" in checks[2].text
        and "(3 h ago)" in checks[2].text
        and "Postfix's queue" in checks[2].action
    )
    assert "friend (12345678) has never been online" in checks[3].text
    assert "not a toxbridge" in checks[4].text


def test_queue_counts_only_deferred_mail_for_tox_recipients():
    entries = [
        {
            "queue_name": "deferred",
            "arrival_time": NOW - 600,
            "recipients": [
                {"address": "tarek@example.org", "delay_reason": "Tox friend 12345678 offline since …"}
            ],
        },
        {
            "queue_name": "deferred",
            "arrival_time": NOW - 9000,
            "recipients": [{"address": "x@elsewhere.example"}],
        },
        {"queue_name": "active", "arrival_time": NOW - 5, "recipients": [{"address": "tarek@example.org"}]},
    ]
    check = status.queue_check(entries, lambda a: a == "tarek@example.org", "", NOW)
    assert (
        check.level == WARN
        and "1 mail(s)" in check.text
        and "10 min" in check.text
        and "offline since" in check.text
    )
    assert status.queue_check([], lambda a: True, "", NOW).level == OK
    unreadable = status.queue_check(None, lambda a: True, "postqueue: not found", NOW)
    assert unreadable.level == WARN and "postqueue: not found" in unreadable.text
    assert "when the friend is online" in check.action


def test_queued_mail_for_a_chat_app_gets_advice_about_chat_apps():
    reason = (
        "451 4.4.1 <k@tox>: Tox friend 12345678 uses a Tox chat app (not a mail bridge) and has "
        "been offline since …; the mail will be tried again"
    )
    entries = [
        {
            "queue_name": "deferred",
            "arrival_time": NOW - 60,
            "recipients": [{"address": "k@tox", "delay_reason": reason}],
        }
    ]
    check = status.queue_check(entries, lambda a: True, "", NOW)
    assert check.level == WARN and "uses a Tox chat app" in check.text
    assert "as chat messages when the friend opens their chat app" in check.action


def test_disk_space_against_the_largest_mail():
    mib = 2**20
    assert status.disk_check(Path("/s"), 60 * mib, 50 * mib).level == ERROR
    assert status.disk_check(Path("/s"), 300 * mib, 50 * mib).level == WARN
    assert status.disk_check(Path("/s"), 5000 * mib, 50 * mib).level == OK
    assert status.disk_check(Path("/s"), None, 50 * mib).level == ERROR


def test_profile_permissions():
    path = Path("/s/profiles/mom.tox")
    assert status.profile_check("mom", path, 0o600, True).level == OK
    loose = status.profile_check("mom", path, 0o644, True)
    assert loose.level == ERROR and "chmod 600" in loose.action
    assert status.profile_check("mom", path, 0o600, False).level == WARN
    assert "toxbridge init" in status.profile_check("mom", path, None, False).action


def test_worst_level_decides_the_exit_code_and_text_shows_actions_for_problems_only():
    checks = [status.Check("a", OK, "fine", "never shown"), status.Check("b", WARN, "hm", "do this")]
    assert status.EXIT[status.worst(checks)] == 1
    assert status.EXIT[status.worst([])] == 0
    text = status.as_text(checks)
    assert "never shown" not in text and "-> do this" in text
    assert status.as_json(checks)["status"] == WARN


def test_the_daemons_snapshot_of_an_identity_is_what_the_checks_read():
    from types import SimpleNamespace
    from typing import cast

    from toxbridge.ops import snapshot
    from toxbridge.tox.identity import Identity

    keys = {0: b"\x01" * 32, 1: b"\x02" * 32, 2: b"\x03" * 32}
    connection = {0: 2, 1: 0, 2: 0}
    node = SimpleNamespace(
        friends=lambda: [0, 1, 2],
        friend_public_key=keys.__getitem__,
        friend_connection=connection.__getitem__,
        address=b"\xab" * 38,
        self_connection=lambda: 1,
    )
    tarek = SimpleNamespace(name="Tarek")
    last = {1: NOW - 600, 2: None}
    mom = SimpleNamespace(
        node=node,
        user=SimpleNamespace(mailbox="mom", address="mom@home.example"),
        friends=SimpleNamespace(contact=lambda key: tarek if key == keys[0] else None),
        online_since={keys[0]: NOW - 60},
        last_online=last.__getitem__,
        peers={0: "toxbridge"},
        is_chat_app=lambda key: key == keys[1],
        chats=SimpleNamespace(cut_today={keys[1]: (time.strftime("%Y-%m-%d", time.gmtime(NOW)), 7)}),
        network_since=NOW - 3600,
    )
    got = snapshot.of_identity(cast(Identity, mom))  # a stand-in with what the snapshot reads
    assert got == {
        "mailbox": "mom",
        "address": "mom@home.example",
        "tox_id": "AB" * 38,
        "network": "TCP",
        "network_since": NOW - 3600,
        "friends": [
            {
                "key": "01" * 32,
                "name": "Tarek",
                "online": True,
                "via": "UDP",
                "since": NOW - 60,
                "bridge": True,
                "chat_app": False,
                "chat_cut_today": ("", 0),
            },
            {
                "key": "02" * 32,
                "name": None,
                "online": False,
                "via": "",
                "since": NOW - 600,
                "bridge": False,
                "chat_app": True,
                "chat_cut_today": (time.strftime("%Y-%m-%d", time.gmtime(NOW)), 7),
            },
            {
                "key": "03" * 32,
                "name": None,
                "online": False,
                "via": "",
                "since": None,
                "bridge": False,
                "chat_app": False,
                "chat_cut_today": ("", 0),
            },
        ],
    }
    checks = status.identity_checks(got, CONFIG, NOW)
    assert [c.level for c in checks] == [OK, OK, WARN, WARN, WARN]
    cut = checks[2]
    assert "reached today's chat limit: 7 message(s) dropped" in cut.text
    assert "chat.day_max_messages" in cut.action and "contacts remove 02020202" in cut.action


def test_a_socket_only_postfix_may_open_is_a_warning_with_advice():
    from toxbridge.config import Endpoint

    sock = Endpoint(path="/var/spool/postfix/toxbridge/lmtp")
    denied = status.listener_check("lmtp", "lmtp_listen", sock, "Permission denied", daemon_up=True)
    assert denied.level == WARN and "run status as root" in denied.action
    held = status.listener_check("lmtp", "lmtp_listen", sock, "Connection refused", daemon_up=True)
    assert held.level == ERROR and f"ss -lxp | grep {sock.path}" in held.action
    port = status.listener_check("lmtp", "lmtp_listen", Endpoint("127.0.0.1", 10025), "x", daemon_up=True)
    assert "ss -ltnp | grep 10025" in port.action


def test_ordinary_mail_is_shown_with_the_users_who_chose_otherwise():
    cfg = config_mod.parse(
        "state_dir: /var/lib/tb\nusers:\n  - {mailbox: bob, address: bob@b.test}\n"
        "  - {mailbox: amy, address: amy@b.test, ordinary_mail: refuse}\n"
    )
    check = status.ordinary_mail_check(cfg)
    assert check.level == OK and check.name == "ordinary"
    assert check.text == (
        "mail to non-contacts: notify (it leaves by ordinary e-mail and the sender gets a notice); refuse for amy"
    )
