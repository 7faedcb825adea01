"""The bridge's YAML config, read into frozen, typed objects.

Unknown keys, missing keys and wrong types are errors that name the file, the line and the key.
Every default lives in the dataclasses below and nowhere else.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# A payload is the message plus toxbridge's envelope (tox/wire.py: at most 16 KiB and a prefix);
# a partial file is counted in whole 4 KiB blocks. 64 KiB covers both.
PAYLOAD_ROOM = 64 * 1024
# What mail to a non-contact gets (ordinary_mail): a notice, nothing, or a refusal at RCPT.
ORDINARY_MAIL = ("notify", "allow", "refuse")
_MAILBOX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class ConfigError(ValueError):
    """The config file cannot be used; the text names the file, line and key."""


@dataclass(frozen=True)
class Endpoint:
    """Where an LMTP service is: an inet host:port or a unix socket path."""

    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        return self.path or f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Node:
    """A Tox bootstrap node or TCP relay."""

    host: str
    port: int
    public_key: str  # 64 hex digits


@dataclass(frozen=True)
class Proxy:
    type: str = "none"  # none | http | socks5
    host: str = ""
    port: int = 0


@dataclass(frozen=True)
class ChatSettings:
    """Friends who use a plain Tox chat app (no bridge): their messages become mail."""

    # Messages this many seconds apart or less make one mail (a burst); it is delivered when
    # this long passes without a message, and at shutdown.
    burst_gap: float = 60.0
    # A friend may make the household store at most this much of one burst; messages past it
    # are counted, not kept (a chat app can send thousands a minute), and the mail says so.
    burst_max_messages: int = 500
    burst_max_bytes: int = 256 * 1024
    # Attachments of mail to a chat app are offered as file transfers up to this size; a bigger
    # one is not offered (a chat line and the 250 reply say so; the text still goes).
    file_max_size: int = 25 * 1024 * 1024
    # Seconds a file offer waits for the chat user to accept it; unanswered, it is withdrawn and
    # the 250 reply says so. With the transfer itself it must stay well under Postfix's
    # lmtp_data_done_timeout (600 s), or Postfix gives up and sends the whole mail again.
    file_accept_wait: float = 300.0
    # And per UTC day, all bursts together: waiting out burst_gap between bursts would let a
    # friend store ~256 KiB a minute (~360 MiB a day). A person chatting stays far below these;
    # past them the friend is told once in a chat line, and the rest of the day is dropped.
    day_max_messages: int = 3000
    day_max_bytes: int = 2 * 1024 * 1024
    # Files a chat friend sends, per UTC day: each may be up to max_message_size, and without a
    # day cap a friend could store that much in every burst. Dozens of phone photos fit.
    day_max_file_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class ToxSettings:
    udp: bool = True
    ipv6: bool = False
    # Off by default: LAN discovery broadcasts to 255.255.255.255 and announces us to the LAN.
    local_discovery: bool = False
    port_range: tuple[int, int] = (33445, 33545)
    bootstrap: tuple[Node, ...] = ()
    tcp_relays: tuple[Node, ...] = ()
    proxy: Proxy = Proxy()
    # A friend request from a key that is not in the contacts: pending (kept for
    # `toxbridge contacts accept`), accept, or ignore (logged only). Contacts are always accepted.
    friend_requests: str = "pending"
    # Mail to a friend's bridge that announces zlib goes compressed when that makes it smaller
    # (docs/benchmarks.md, "Levers"); false: announce nothing and send every mail raw.
    compression: bool = True
    # The household's upload speed to stay under, in kbit/s (0: no limit). File chunks are handed
    # to toxcore no faster than this, so a home router's deep queue stays short and toxcore's
    # rate does not collapse in it (docs/benchmarks.md, "Pacing"); ~90 % of the uplink.
    upload_limit_kbit: int = 0

    def offline_advice(self) -> str:
        """What to check when the bridge is off the Tox network (the log and `status` say it)."""
        nodes = ", ".join(f"{n.host}:{n.port}" for n in self.bootstrap + self.tcp_relays) or "none configured"
        return (
            f"check the Internet connection and that bootstrap nodes answer ({nodes}); where UDP is "
            "blocked, set tox.udp: false with tcp_relays. A Tox network of the family's own nodes "
            "alone needs at least 7 that stay on (toxcore counts itself offline with fewer than 6 "
            "others answering, docs/facts.md): else add public bootstrap nodes to tox.bootstrap"
        )


@dataclass(frozen=True)
class PostfixQueue:
    """How the bridge reaches Postfix's queue, to push a friend's deferred mail when it comes online."""

    config_dir: Path = Path("/etc/postfix")
    postqueue: Path = Path("/usr/sbin/postqueue")


@dataclass(frozen=True)
class Privacy:
    """What outgoing mail sheds before it leaves over Tox (the household's network and software)."""

    # The Received: lines at the top of the header: added by this household's own Postfix (and
    # any filter on the way); they name the sender's laptop, its LAN address and the Pi.
    strip_received: bool = True
    strip_headers: tuple[str, ...] = ("User-Agent", "X-Mailer", "X-Originating-IP")


@dataclass(frozen=True)
class User:
    mailbox: str  # the Dovecot user name that receives this person's mail
    address: str  # the person's own e-mail address: the only sender their identity sends for
    # This person's own choice for mail to people who are not Tox contacts; empty: the household's.
    ordinary_mail: str = ""


SOCKET_DIR = "/var/spool/postfix/toxbridge"


@dataclass(frozen=True)
class Config:
    state_dir: Path
    users: tuple[User, ...]
    # Unix sockets that only Postfix may open (mail/listen.py says why and how), in Postfix's queue
    # directory, where chrooted trivial-rewrite reaches the socketmap.
    lmtp_listen: Endpoint = Endpoint(path=f"{SOCKET_DIR}/lmtp")
    # How long Postfix's LMTP session may stay silent (a command, or the wait for our answer after
    # the end of DATA) before the bridge drops it. Longer than the lmtp_data_done_timeout Postfix
    # waits for that answer (600 s, deploy/postfix/master.cf.toxbridge), so the bridge never cuts
    # a session Postfix still waits on; aiosmtpd's own 300 s did, on a slow uplink.
    lmtp_timeout: float = 660.0
    # Postfix asks here, per recipient, whether mail goes to the bridge (socketmap transport table).
    socketmap_listen: Endpoint = Endpoint(path=f"{SOCKET_DIR}/socketmap")
    # Postfix's submission service shows each mail to the bridge's milter here (smtpd_milters).
    milter_listen: Endpoint = Endpoint(path=f"{SOCKET_DIR}/milter")
    # Mail to addresses that are not Tox contacts: notify (it leaves by ordinary e-mail and the
    # sender gets a notice in their INBOX), allow (no notice) or refuse (550 5.7.1 at RCPT).
    ordinary_mail: str = "notify"
    # The household's contacts book: names, addresses and Tox IDs (toxbridge contacts add|remove).
    contacts: Path = Path("/etc/toxbridge/contacts.yaml")
    # Mail from a friend whose From: or envelope sender belongs to someone else: reject (550 5.7.1)
    # or flag (deliver with an X-Toxbridge-Warning header and x-tox=fail).
    forged_sender: str = "reject"
    # A friend's sender address that no contact claims is learned (address -> that friend's key),
    # so replies to it go over Tox. Off: such mail is treated like a forged sender.
    learn_senders: bool = True
    # Postfix's recipient_delimiter (main.cf.toxbridge): tarek+news@example.org is looked up as
    # tarek@example.org, as Postfix looks up its own tables; any one of the characters splits.
    recipient_delimiter: str = "+"
    dovecot_lmtp: Endpoint = Endpoint("127.0.0.1", 24)
    hostname: str = "toxbridge.localdomain"
    max_message_size: int = 50 * 1024 * 1024
    # How long the sender waits for the peer's answer after the last byte, before telling
    # Postfix 4.4.1 (it keeps the mail and retries). Postfix's lmtp_data_done_timeout is longer.
    result_timeout: float = 120.0
    # A transfer that makes no progress for this long is given up (4.4.1).
    transfer_stall_timeout: float = 60.0
    # The receiver remembers what it delivered (payload hash, mailbox → reply) this many days,
    # so a mail Postfix sends again after a lost answer is not delivered twice.
    dedup_days: int = 30
    # A broken incoming transfer is kept this long for the sender's retry to resume from.
    partial_hours: int = 24
    # The room partial files may take (friends that offer mails and cancel them must not fill
    # the disk): bytes per friend (at least one mail of max_message_size, so every mail fits),
    # in all, and the free space they always leave. Offers past these are refused 452 4.3.1.
    partial_bytes_per_friend: int = 128 * 1024 * 1024
    partial_bytes_total: int = 512 * 1024 * 1024
    partial_min_free: int = 1024 * 1024 * 1024
    # On SIGTERM, mail on its way over Tox and deliveries to Dovecot get this long in all (one
    # deadline); what is left is answered 4xx (Postfix keeps it). A second signal stops at once.
    # Plus daemon.CLOSE_SECONDS it stays below TimeoutStopSec in deploy/systemd/toxbridge.service.
    stop_timeout: float = 20.0
    postfix: PostfixQueue = PostfixQueue()
    chat: ChatSettings = ChatSettings()
    privacy: Privacy = Privacy()
    tox: ToxSettings = ToxSettings()
    source: str = field(default="", compare=False)

    @property
    def mailboxes(self) -> tuple[str, ...]:
        return tuple(u.mailbox for u in self.users)

    def user_by_mailbox(self, mailbox: str) -> User | None:
        return next((u for u in self.users if u.mailbox == mailbox), None)

    def user_by_address(self, address: str) -> User | None:
        return next((u for u in self.users if u.address.lower() == address.lower()), None)

    def ordinary_mail_of(self, user: User | None) -> str:
        """What mail from this user (None: not a user) to a non-contact gets."""
        return (user.ordinary_mail if user else "") or self.ordinary_mail


class LineDict(dict):
    """A mapping that remembers the line of each key (1-based)."""

    line = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    mapping = LineDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise ConfigError(f"line {line}: key {key!r} is not a string")
        if key in mapping:
            raise ConfigError(f"line {line}: key {key!r} appears twice")
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8") from None
    return parse(text, str(path))


def load_yaml(text: str, source: str):
    """YAML whose mappings remember their lines (`.line`, `.lines[key]`); errors name the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(f"{source}: {where}: not valid YAML: {getattr(e, 'problem', e)}") from None


def parse(text: str, source: str = "<config>") -> Config:
    data = load_yaml(text, source)
    if not isinstance(data, LineDict):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values")
    config = _convert(Config, data, source, "", data.line)
    config = dataclasses.replace(config, source=source)
    _check(config, data, source)
    return config


def _convert(kind, value, source: str, key: str, line: int):
    """Turn a YAML value into `kind`, or raise ConfigError naming where it went wrong."""
    where = f"{source}: line {line}: {key or 'top level'}"
    origin = typing.get_origin(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind) and kind is not Endpoint:
        if not isinstance(value, LineDict):
            raise ConfigError(f"{where}: expected a mapping, got {_shown(value)}")
        hints = typing.get_type_hints(kind)
        fields = {f.name: f for f in dataclasses.fields(kind) if f.init and f.name != "source"}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            k = unknown[0]
            raise ConfigError(
                f"{source}: line {value.lines[k]}: unknown key {_join(key, k)!r}"
                f" (known: {', '.join(sorted(fields))})"
            )
        args = {}
        for name, f in fields.items():
            if name in value:
                args[name] = _convert(hints[name], value[name], source, _join(key, name), value.lines[name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: line {value.line}: missing key {_join(key, name)!r}")
        return kind(**args)
    if kind is Endpoint:
        return _endpoint(value, where)
    if kind is Path:
        if not isinstance(value, str) or not value.startswith("/"):
            raise ConfigError(f"{where}: expected an absolute path, got {_shown(value)}")
        return Path(value)
    if origin is tuple and kind.__args__[-1] is Ellipsis:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_shown(value)}")
        return tuple(_convert(kind.__args__[0], v, source, f"{key}[{i}]", line) for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, list) or len(value) != len(kind.__args__):
            raise ConfigError(f"{where}: expected a list of {len(kind.__args__)} items, got {_shown(value)}")
        return tuple(_convert(t, v, source, key, line) for t, v in zip(kind.__args__, value, strict=False))
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{where}: expected a positive number, got {_shown(value)}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative integer, got {_shown(value)}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_shown(value)}")
        return value
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a non-empty string, got {_shown(value)}")
        return value
    raise TypeError(f"config type {kind} not handled")  # a programming error, not bad input


def _endpoint(value, where: str) -> Endpoint:
    if isinstance(value, str) and value.startswith("/"):
        return Endpoint(path=value)
    if isinstance(value, str):
        host, colon, port = value.rpartition(":")
        host = host.strip("[]")
        if colon and host and port.isdigit() and 0 < int(port) < 65536:
            return Endpoint(host=host, port=int(port))
    raise ConfigError(f"{where}: expected host:port or an absolute unix socket path, got {_shown(value)}")


def _check(config: Config, data: LineDict, source: str) -> None:
    """Rules that span keys."""

    def fail(key: str, message: str) -> typing.NoReturn:
        raise ConfigError(f"{source}: line {data.lines.get(key, data.line)}: {key}: {message}")

    for key in ("lmtp_listen", "socketmap_listen", "milter_listen"):
        listen = getattr(config, key)
        if not listen.path and not is_loopback(listen.host):
            fail(key, f"{listen.host} is not a loopback address; the bridge only listens on loopback")
    if config.lmtp_listen == config.socketmap_listen:
        fail("socketmap_listen", "must differ from lmtp_listen")
    if config.milter_listen in (config.lmtp_listen, config.socketmap_listen):
        fail("milter_listen", "must differ from lmtp_listen and socketmap_listen")
    if config.ordinary_mail not in ORDINARY_MAIL:
        fail("ordinary_mail", f"must be {', '.join(ORDINARY_MAIL)}, not {config.ordinary_mail!r}")
    if config.forged_sender not in ("reject", "flag"):
        fail("forged_sender", f"must be reject or flag, not {config.forged_sender!r}")
    if any(c.isspace() or c.isalnum() or c == "@" for c in config.recipient_delimiter):
        fail("recipient_delimiter", "separator characters only (Postfix's recipient_delimiter, e.g. +)")
    if config.partial_bytes_per_friend < config.max_message_size + PAYLOAD_ROOM:
        fail(
            "partial_bytes_per_friend",
            f"must be at least max_message_size + {PAYLOAD_ROOM} (else the largest mail never fits)",
        )
    # Mail to a chat app waits for the receipts (result_timeout), then for the files to be taken:
    # both within Postfix's 600 s wait for the answer (lmtp_data_done_timeout), with room to send.
    if not 0 < config.chat.file_accept_wait <= 480 - config.result_timeout:
        fail(
            "chat",
            f"file_accept_wait must be more than 0 and at most 480 s minus result_timeout "
            f"({480 - config.result_timeout:.0f} s): Postfix waits 600 s for the answer",
        )
    if config.partial_bytes_total < config.partial_bytes_per_friend:
        fail("partial_bytes_total", "must be at least partial_bytes_per_friend")
    if not config.users:
        fail("users", "at least one user is needed")
    seen: set[str] = set()
    for user in config.users:
        if not _MAILBOX.match(user.mailbox):
            fail("users", f"mailbox {user.mailbox!r} may hold only letters, digits and . _ + -")
        if "@" not in user.address.strip("@"):
            fail("users", f"address {user.address!r} is not an e-mail address")
        if user.ordinary_mail and user.ordinary_mail not in ORDINARY_MAIL:
            fail(
                "users",
                f"{user.mailbox}: ordinary_mail must be {', '.join(ORDINARY_MAIL)}, not {user.ordinary_mail!r}",
            )
        for name in (f"mailbox {user.mailbox}", f"address {user.address.lower()}"):
            if name in seen:
                fail("users", f"{name} is listed twice")
            seen.add(name)
    low, high = config.tox.port_range
    if not 0 < low <= high < 65536:
        fail("tox", f"port_range {low}..{high} is not a range of ports")
    if config.tox.proxy.type not in ("none", "http", "socks5"):
        fail("tox", f"proxy type must be none, http or socks5, not {config.tox.proxy.type!r}")
    if config.tox.friend_requests not in ("accept", "pending", "ignore"):
        fail("tox", f"friend_requests must be accept, pending or ignore, not {config.tox.friend_requests!r}")
    for node in config.tox.bootstrap + config.tox.tcp_relays:
        if len(node.public_key) != 64 or not _is_hex(node.public_key):
            fail("tox", f"node {node.host}:{node.port}: public_key must be 64 hex digits")
    proxy = config.tox.proxy
    if proxy.type != "none":
        if not proxy.host or not 0 < proxy.port < 65536:
            fail("tox", f"proxy type {proxy.type} needs its host and port (Tor: host 127.0.0.1, port 9050)")
        # toxcore 0.2.18 logs "UDP enabled and proxy set: disabling UDP" and goes TCP-only.
        if config.tox.udp:
            fail("tox", "a proxy carries only TCP: set udp: false (toxcore turns UDP off anyway)")
    # Without UDP (or through a proxy) toxcore reaches the network only through TCP relays:
    # bootstrap nodes alone never bring it online (measured on toxcore 0.2.18).
    if not config.tox.udp and not config.tox.tcp_relays:
        fail(
            "tox",
            "TCP-only mode needs tcp_relays (a tox-bootstrapd with enable_tcp_relay, "
            "listed under tcp_relays as well as bootstrap)",
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _shown(value) -> str:
    if isinstance(value, (dict, list)):
        return "a " + ("mapping" if isinstance(value, dict) else "list")
    return repr(value)
