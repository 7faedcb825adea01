"""Config: typed values, defaults in one place, errors that name the line and the key."""

import re
from pathlib import Path

import pytest

from toxbridge import config
from toxbridge.config import ConfigError, Endpoint

DEPLOY = Path(__file__).parent.parent / "deploy" / "toxbridge.yaml"
SPOOL = "/var/spool/postfix"  # Postfix's queue directory on Debian

MINIMAL = """\
state_dir: /var/lib/tb
users:
  - mailbox: bob
    address: bob@bob.test
"""


def test_shipped_example_is_valid():
    cfg = config.load(DEPLOY)
    assert cfg.users[0].mailbox == "alice"
    assert cfg.tox.local_discovery is False
    assert (
        cfg.lmtp_listen
        == config.Config(Path("/"), ()).lmtp_listen
        == Endpoint(path=f"{SPOOL}/toxbridge/lmtp")
    )


def test_shipped_postfix_files_name_the_shipped_sockets():
    """main.cf's socketmap (relative to the queue directory: trivial-rewrite is chrooted there) and
    transport.regexp's nexthop name the sockets deploy/toxbridge.yaml listens on."""
    from toxbridge.lab.postfix import main_cf_settings

    cfg = config.load(DEPLOY)
    postfix = DEPLOY.parent / "postfix"
    socketmap = cfg.socketmap_listen.path.removeprefix(f"{SPOOL}/")
    transport_maps = main_cf_settings((postfix / "main.cf.toxbridge").read_text())["transport_maps"]
    assert f"socketmap:unix:{socketmap}:transport" in transport_maps
    assert (
        f"/@tox$/                 toxbridge:unix:{cfg.lmtp_listen.path}\n"
        in (postfix / "transport.regexp").read_text()
    )


def test_defaults():
    cfg = config.parse(MINIMAL)
    assert cfg.dovecot_lmtp == Endpoint("127.0.0.1", 24)
    assert cfg.tox.port_range == (33445, 33545) and cfg.tox.udp and not cfg.tox.ipv6
    bob = cfg.user_by_address("BOB@bob.test")
    assert bob is not None and bob.mailbox == "bob"


def test_recipient_delimiter_agrees_with_postfix():
    """Postfix and the bridge strip the same +extension (deploy/postfix/main.cf.toxbridge)."""
    from toxbridge.lab.postfix import main_cf_settings

    main_cf = main_cf_settings((DEPLOY.parent / "postfix" / "main.cf.toxbridge").read_text())
    assert main_cf["recipient_delimiter"] == config.load(DEPLOY).recipient_delimiter == "+"
    assert config.parse(MINIMAL).recipient_delimiter == "+"
    assert config.parse(MINIMAL + "recipient_delimiter: '+-'\n").recipient_delimiter == "+-"
    for bad in ("'a'", "'@'", "'+ '"):
        with pytest.raises(ConfigError, match="recipient_delimiter: separator characters only"):
            config.parse(MINIMAL + f"recipient_delimiter: {bad}\n")


def test_unix_socket_endpoint():
    cfg = config.parse(MINIMAL + "dovecot_lmtp: /run/dovecot/lmtp\n")
    assert cfg.dovecot_lmtp == Endpoint(path="/run/dovecot/lmtp")


@pytest.mark.parametrize(
    "extra, error",
    [
        ("colour: red\n", "line 5: unknown key 'colour'"),
        ("tox:\n  udp: maybe\n", "line 6: tox.udp: expected true or false, got 'maybe'"),
        (
            "tox:\n  bootstrap:\n    - host: 127.0.0.1\n      port: x\n      public_key: ab\n",
            "tox.bootstrap[0].port: expected a non-negative integer",
        ),
        ("tox:\n  mtu: 3\n", "line 6: unknown key 'tox.mtu'"),
        ("lmtp_listen: 0.0.0.0:25\n", "line 5: lmtp_listen: 0.0.0.0 is not a loopback address"),
        ("dovecot_lmtp: nowhere\n", "dovecot_lmtp: expected host:port"),
        ("state_dir: /x\n", "line 5: key 'state_dir' appears twice"),
        ("tox:\n  bootstrap:\n    - {host: h, port: 1, public_key: abc}\n", "public_key must be 64 hex"),
        ("result_timeout: 0\n", "result_timeout: expected a positive number"),
        ("chat:\n  burst_gap: 0\n", "line 6: chat.burst_gap: expected a positive number"),
        ("chat:\n  burst_max_bytes: lots\n", "chat.burst_max_bytes: expected a non-negative integer"),
    ],
)
def test_errors_name_line_and_key(extra, error):
    with pytest.raises(ConfigError) as e:
        config.parse(MINIMAL + extra, "t.yaml")
    assert str(e.value).startswith("t.yaml: ")
    assert error in str(e.value)


@pytest.mark.parametrize(
    "text, error",
    [
        ("users: [\n", "not valid YAML"),
        ("- a\n", "must be a mapping"),
        ("users: []\nstate_dir: /x\n", "at least one user"),
        ("users:\n  - mailbox: a\n", "missing key 'state_dir'"),
        ("state_dir: /x\nusers:\n  - mailbox: a\n", "missing key 'users\\[0\\].address'"),
        ("state_dir: relative\nusers: []\n", "absolute path"),
        (
            "state_dir: /x\nusers:\n  - {mailbox: a, address: a@x}\n  - {mailbox: a, address: b@x}\n",
            "mailbox a is listed twice",
        ),
        (
            "state_dir: /x\nusers:\n  - {mailbox: a, address: a@x}\nchat: {file_accept_wait: 600}\n",
            "file_accept_wait must be more than 0 and at most 480 s minus result_timeout \\(360 s\\)",
        ),
        (
            "state_dir: /x\nusers:\n  - {mailbox: a, address: a@x}\nresult_timeout: 300\nchat: {file_accept_wait: 200}\n",
            "at most 480 s minus result_timeout \\(180 s\\)",
        ),
    ],
)
def test_broken_files(text, error):
    with pytest.raises(ConfigError, match=error):
        config.parse(text)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        config.load(tmp_path / "missing.yaml")


RELAY = """\
  tcp_relays:
    - {host: 127.0.0.1, port: 33445, public_key: "%s"}
""" % ("ab" * 32)
TOR = "  proxy: {type: socks5, host: 127.0.0.1, port: 9050}\n"


@pytest.mark.parametrize(
    "tox, error",
    [
        # toxcore 0.2.18 with a proxy logs "UDP enabled and proxy set: disabling UDP" (measured)
        ("  udp: true\n" + RELAY + TOR, "line 5: tox: a proxy carries only TCP: set udp: false"),
        (RELAY + TOR, "set udp: false"),  # udp defaults to true
        ("  udp: false\n", "line 5: tox: TCP-only mode needs tcp_relays"),
        ("  udp: false\n  tcp_relays: []\n", "TCP-only mode needs tcp_relays"),
        # a proxy only carries connections to TCP relays: bootstrap nodes alone never bring toxcore online
        ("  udp: false\n" + TOR, "TCP-only mode needs tcp_relays"),
        (
            "  udp: false\n" + RELAY + "  proxy: {type: socks5, host: 127.0.0.1}\n",
            "proxy type socks5 needs its host and port",
        ),
        (
            "  udp: false\n" + RELAY + "  proxy: {type: http, port: 3128}\n",
            "proxy type http needs its host and port",
        ),
        (
            "  udp: false\n" + RELAY + "  proxy: {type: socks5, host: 127.0.0.1, port: 70000}\n",
            "proxy type socks5 needs its host and port",
        ),
    ],
)
def test_tcp_only_and_proxy_combinations_refused(tox, error):
    with pytest.raises(ConfigError) as e:
        config.parse(MINIMAL + "tox:\n" + tox, "t.yaml")
    assert str(e.value).startswith("t.yaml: ") and error in str(e.value)


@pytest.mark.parametrize(
    "tox",
    [
        "  udp: false\n" + RELAY,
        "  udp: false\n" + RELAY + TOR,
        "  udp: false\n" + RELAY + "  proxy: {type: none}\n",
        "  udp: true\n  proxy: {type: none}\n",
    ],
)
def test_tcp_only_and_proxy_combinations_accepted(tox):
    cfg = config.parse(MINIMAL + "tox:\n" + tox)
    if "socks5" in tox:
        assert (cfg.tox.proxy.type, cfg.tox.proxy.host, cfg.tox.proxy.port) == ("socks5", "127.0.0.1", 9050)
        assert cfg.tox.udp is False and len(cfg.tox.tcp_relays) == 1


def test_upload_limit_defaults_to_none_and_refuses_a_negative_rate():
    assert config.parse(MINIMAL).tox.upload_limit_kbit == 0
    assert config.parse(MINIMAL + "tox:\n  upload_limit_kbit: 4500\n").tox.upload_limit_kbit == 4500
    with pytest.raises(ConfigError) as e:
        config.parse(MINIMAL + "tox:\n  upload_limit_kbit: -5\n", "t.yaml")
    assert str(e.value).startswith("t.yaml: line 6: tox.upload_limit_kbit: expected a non-negative")


def test_ordinary_mail_defaults_to_notify_and_a_user_may_choose_otherwise():
    cfg = config.parse(MINIMAL)
    assert cfg.ordinary_mail == "notify" and cfg.milter_listen == Endpoint(path=f"{SPOOL}/toxbridge/milter")
    assert cfg.ordinary_mail_of(cfg.users[0]) == "notify" and cfg.ordinary_mail_of(None) == "notify"
    cfg = config.parse(
        "state_dir: /var/lib/tb\nordinary_mail: refuse\nmilter_listen: /run/toxbridge/milter\nusers:\n"
        "  - {mailbox: bob, address: bob@bob.test, ordinary_mail: allow}\n"
        "  - {mailbox: amy, address: amy@bob.test}\n"
    )
    bob, amy = cfg.users
    assert cfg.ordinary_mail_of(bob) == "allow" and cfg.ordinary_mail_of(amy) == "refuse"
    assert cfg.ordinary_mail_of(None) == "refuse" and cfg.milter_listen == Endpoint(
        path="/run/toxbridge/milter"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ordinary_mail: warn\n", "line 2: ordinary_mail: must be notify, allow, refuse, not 'warn'"),
        ("ordinary_mail: ''\n", "line 2: ordinary_mail: expected a non-empty string"),
        ("milter_listen: 192.0.2.1:10027\n", "milter_listen: 192.0.2.1 is not a loopback address"),
        ("milter_listen: /var/spool/postfix/toxbridge/lmtp\n", "milter_listen: must differ from lmtp_listen"),
        ("milter_listen: 10027\n", "milter_listen: expected host:port or an absolute unix socket path"),
    ],
)
def test_ordinary_mail_and_milter_listen_errors_name_the_line(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.parse(
            "state_dir: /var/lib/tb\n" + text + "users:\n  - {mailbox: bob, address: bob@bob.test}\n"
        )


def test_a_users_ordinary_mail_is_checked_too():
    with pytest.raises(
        ConfigError, match=r"users: bob: ordinary_mail must be notify, allow, refuse, not 'often'"
    ):
        config.parse(
            "state_dir: /var/lib/tb\nusers:\n  - {mailbox: bob, address: bob@bob.test, ordinary_mail: often}\n"
        )
