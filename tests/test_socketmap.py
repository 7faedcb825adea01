"""The Postfix socketmap server: the codec at every split point, its limits and garbage; the server
against Postfix's own client (`postmap -q`); and, marked integration, a real lab Postfix routing
mail through it: which keys it asks, how long its caches hold an answer, what happens while the
bridge is down, and the "Tox only" bounce.

Measured here with Postfix 3.7.11 (Debian 12); the numbers are asserted below and printed:
- keys: only trivial-rewrite connects (one connection for many lookups; closed after 10 s idle).
  It asks the full address exactly as the client wrote it (`Friend-x@Example.ORG`, case kept;
  `friend-x+ext@example.org`, extension kept, never `friend-x@example.org`), the envelope sender
  at MAIL FROM, each recipient at RCPT TO, each recipient again when qmgr routes the queued mail,
  and `*` (twice at its start, then at most every 30 s); never a bare domain. Addresses
  transport.regexp answers (own domain, @tox) never reach the socketmap.
- caches: trivial-rewrite keeps no answers (only `*`, 30 s). qmgr reuses the answer for the last
  (sender, recipient) pair it resolved, failures included, until 30 s after that lookup (stale at
  29 s, fresh at 30 s in a separate run; 29.9 s here); any other pair resolved in between ends it
  (so NOTFOUND -> OK showed at once: the bounce in between was resolved). Each smtpd process keeps
  its RCPT answers, failures included, until it exits (max_idle = 100s without clients, max_use =
  100 sessions; measured separately: a fresh answer after 102 s idle); a parallel session, in
  another smtpd process, is fresh.
- bridge down: RCPT to other addresses 451 4.3.0 "Temporary lookup failure" (for outside clients
  too, where 554 Relay access denied would come); own domain and @tox accepted and delivered;
  queued mail deferred 4.3.0 "address resolver failure", delivered by the first queue run 30 s
  after its failed lookup. An exception in the map function (TEMP) gives the same 451.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toxbridge.config import Endpoint
from toxbridge.lab import _fs
from toxbridge.lab.ports import free_port, port_accepts, wait_until
from toxbridge.mail import socketmap
from toxbridge.mail.socketmap import Decoder, SocketmapError

# --- codec ------------------------------------------------------------------------------------

REQUESTS = [
    b"transport bob@example.org",
    b"",
    b"transport Friend@Example.ORG",
    b"x 1:2,3",
    "transport jürgen@bücher.example".encode(),
    bytes(range(256)),
    b"transport *",
]
STREAM = b"".join(socketmap.encode(r) for r in REQUESTS)


def feed_all(decoder: Decoder, pieces) -> list[bytes]:
    out = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out


def test_every_split_point():
    for cut in range(len(STREAM) + 1):
        assert feed_all(Decoder(), [STREAM[:cut], STREAM[cut:]]) == REQUESTS, cut


@pytest.mark.parametrize("size", [4096, 128, 16, 1])
def test_read_sizes(size):
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(Decoder(), pieces) == REQUESTS


@settings(max_examples=200)
@given(requests=st.lists(st.binary(max_size=50), max_size=8), cuts=st.lists(st.integers(0, 500), max_size=10))
def test_any_requests_any_cuts(requests, cuts):
    data = b"".join(socketmap.encode(r) for r in requests)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert feed_all(Decoder(), pieces) == requests


def test_waits_for_more():
    d = Decoder()
    assert not d.partial
    assert d.feed(b"25:") == []
    assert d.partial
    assert d.feed(b"transport bob@") == []
    assert d.feed(b"example.org") == []
    assert d.feed(b",") == [b"transport bob@example.org"]
    assert not d.partial


def test_limit_is_postfix_100000():
    assert socketmap.MAX_SIZE == 100_000
    big = b"x" * 100_000
    assert Decoder().feed(socketmap.encode(big)) == [big]
    with pytest.raises(SocketmapError, match="100001 bytes"):
        Decoder().feed(b"100001:")


def test_limit_is_enforced_before_the_data_arrives():
    d = Decoder(limit=10)
    with pytest.raises(SocketmapError):
        d.feed(b"11:")  # no data sent yet
    # Without the colon: more digits than the limit has cannot become a valid length.
    d = Decoder(limit=10)
    assert d.feed(b"10") == []
    with pytest.raises(SocketmapError):
        d.feed(b"0")
    with pytest.raises(SocketmapError):
        Decoder(limit=100_000).feed(b"9" * 7)


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello",  # no length
        b":abc,",  # empty length
        b"-1:x,",  # sign
        b" 3:abc,",  # leading space
        b"3:abc;",  # wrong terminator
        b"3:abcd,",  # longer than said
        b"0x3:abc,",  # not decimal
        b"GET / HTTP/1.1\r\n\r\n",
        "٣:abc,".encode(),  # a non-ASCII digit
    ],
)
def test_garbage_is_refused_at_every_split_point(garbage):
    for cut in range(len(garbage) + 1):
        d = Decoder()
        with pytest.raises(SocketmapError):
            d.feed(garbage[:cut])
            d.feed(garbage[cut:])


def test_after_garbage_the_decoder_stays_broken():
    d = Decoder()
    with pytest.raises(SocketmapError):
        d.feed(b"3:abc;")
    with pytest.raises(SocketmapError):
        d.feed(b"3:abc,")


def test_requests_before_garbage_come_first_at_every_split_point():
    stream = b"3:abc,5:hello,3:abc;4:more,"
    for cut in range(len(stream) + 1):
        d, got = Decoder(), []
        with pytest.raises(SocketmapError):
            for piece in (stream[:cut], stream[cut:], b""):
                got += d.feed(piece)
        assert got == [b"abc", b"hello"], cut
        assert isinstance(d.error, SocketmapError)


def test_reply_forms():
    # socketmap_table(5): "OK <space> data", "NOTFOUND <space>", "TEMP <space> reason", "PERM <space> reason".
    assert socketmap.ok("toxbridge:inet:127.0.0.1:10025") == b"33:OK toxbridge:inet:127.0.0.1:10025,"
    assert socketmap.notfound() == b"9:NOTFOUND ,"
    assert socketmap.temp("bridge\nbusy") == b"16:TEMP bridge busy,"
    assert socketmap.perm("no such map: x") == b"19:PERM no such map: x,"
    with pytest.raises(ValueError):
        socketmap.ok("x" * 100_000)  # "OK " makes it 100003, more than Postfix reads


def contacts(key: str) -> str | None:
    return {"friend@example.org": "toxbridge:inet:127.0.0.1:10025"}.get(key.lower())


def test_answer(caplog):
    def broken(key):
        raise KeyError(key)

    maps = {"transport": contacts, "broken": broken, "long": lambda key: "x" * 100_000}
    assert socketmap.answer(b"transport Friend@Example.ORG", maps) == socketmap.ok(
        "toxbridge:inet:127.0.0.1:10025"
    )
    assert socketmap.answer(b"transport stranger@example.org", maps) == b"9:NOTFOUND ,"
    assert socketmap.answer(b"transport *", maps) == b"9:NOTFOUND ,"
    assert socketmap.answer(b"nosuch a@b", maps) == b"24:PERM no such map: nosuch,"
    assert socketmap.answer(b"transport", maps) == socketmap.perm("request is not NAME KEY")
    assert socketmap.answer(b"transport \xff@example.org", maps) == b"9:NOTFOUND ,"
    with caplog.at_level(logging.ERROR, "toxbridge.socketmap"):
        assert socketmap.answer(b"broken a@b", maps).split(b":", 1)[1].startswith(b"TEMP ")
        assert socketmap.answer(b"long a@b", maps).split(b":", 1)[1].startswith(b"TEMP ")
    assert "lookup of 'a@b' failed" in caplog.text


def test_the_key_is_everything_after_the_first_space():
    seen: list[str] = []
    socketmap.answer(b'transport "a b"@example.org', {"transport": seen.append})
    assert seen == ['"a b"@example.org']


# --- server, asked by Postfix's own client ----------------------------------------------------


@pytest.fixture(scope="module")
def postmap_config():
    # postmap reads main.cf; this machine has none in /etc/postfix.
    path = Path(tempfile.mkdtemp(prefix="toxbridge-postmap-", dir="/tmp"))
    (path / "main.cf").write_text("compatibility_level = 3.6\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def postmap(config: Path, table: str, *keys: str) -> tuple[int, str, str]:
    """`postmap -q KEY TABLE` (one key) or `postmap -q - TABLE` (several, one connection)."""
    if len(keys) == 1:
        args, data = ["-q", keys[0], table], None
    else:
        args, data = ["-q", "-", table], "".join(k + "\n" for k in keys).encode()
    p = await asyncio.create_subprocess_exec(
        "postmap",
        "-c",
        str(config),
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(p.communicate(data), 30)
    assert p.returncode is not None  # communicate() waited for the exit
    return p.returncode, out.decode(), err.decode()


def serve(maps, endpoint=None):
    endpoint = endpoint or Endpoint("127.0.0.1", free_port())
    return endpoint, socketmap.start_server(endpoint, maps)


def test_postmap_ok_notfound_perm_temp(postmap_config):
    def broken(key):
        raise RuntimeError("contacts file unreadable")

    async def go():
        endpoint, starting = serve({"transport": contacts, "broken": broken})
        server = await starting
        table = f"socketmap:inet:{endpoint.host}:{endpoint.port}"
        try:
            assert await postmap(postmap_config, f"{table}:transport", "Friend@Example.ORG") == (
                0,
                "toxbridge:inet:127.0.0.1:10025\n",
                "",
            )
            assert await postmap(postmap_config, f"{table}:transport", "stranger@example.org") == (1, "", "")
            rc, _, err = await postmap(postmap_config, f"{table}:nosuch", "a@b")
            assert rc != 0 and "socketmap server permanent error: no such map: nosuch" in err
            rc, _, err = await postmap(postmap_config, f"{table}:broken", "a@b")
            assert rc != 0 and "socketmap server temporary error: toxbridge broken lookup failed" in err
            # Several keys on one connection, the server still fine after the failures above.
            rc, out, _ = await postmap(
                postmap_config,
                f"{table}:transport",
                "friend@example.org",
                "nobody@example.org",
                "FRIEND@EXAMPLE.ORG",
            )
            assert (rc, out.splitlines()) == (
                0,
                [
                    "friend@example.org\ttoxbridge:inet:127.0.0.1:10025",
                    "FRIEND@EXAMPLE.ORG\ttoxbridge:inet:127.0.0.1:10025",
                ],
            )
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(go())


def test_unix_socket(postmap_config):
    async def go():
        path = Path(tempfile.mkdtemp(prefix="toxbridge-socketmap-", dir="/tmp"))
        try:
            sock = path / "socketmap"
            sock.touch()  # a leftover of an earlier run is only replaced when it is a socket
            with pytest.raises(OSError):
                await socketmap.start_server(Endpoint(path=str(sock)), {"transport": contacts})
            sock.unlink()
            for _ in range(2):  # the second start replaces the first one's socket file
                server = await socketmap.start_server(Endpoint(path=str(sock)), {"transport": contacts})
                assert await postmap(
                    postmap_config, f"socketmap:unix:{sock}:transport", "friend@example.org"
                ) == (0, "toxbridge:inet:127.0.0.1:10025\n", "")
                server.close()
                await server.wait_closed()
        finally:
            shutil.rmtree(path, ignore_errors=True)

    asyncio.run(go())


def test_pipelined_requests_garbage_and_other_connections():
    calls = []

    def record(key):
        calls.append(key)
        if key == "boom":
            raise ValueError("boom")
        return contacts(key)

    async def go():
        endpoint, starting = serve({"transport": record})
        server = await starting
        try:
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            # Three requests in one write, the second cut short; one reply each, in order.
            data = b"".join(
                socketmap.encode(r)
                for r in (b"transport friend@example.org", b"transport boom", b"transport x@y")
            )
            writer.write(data[:40])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(data[40:])
            replies = Decoder()
            got: list[bytes] = []
            while len(got) < 3:
                got += replies.feed(await asyncio.wait_for(reader.read(4096), 5))
            assert got[0] == b"OK toxbridge:inet:127.0.0.1:10025"
            assert got[1].startswith(b"TEMP ")
            assert got[2] == b"NOTFOUND "
            # Garbage: the server answers what came before it, then closes this connection ...
            writer.write(socketmap.encode(b"transport x@y") + b"GET / HTTP/1.0\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == socketmap.notfound()
            writer.close()
            # ... and a netstring over the limit is refused from its length alone.
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            writer.write(b"100001:")
            assert await asyncio.wait_for(reader.read(4096), 5) == b""
            writer.close()
            # Other connections are served as before.
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            writer.write(socketmap.encode(b"transport friend@example.org"))
            assert await asyncio.wait_for(reader.read(4096), 5) == socketmap.ok(
                "toxbridge:inet:127.0.0.1:10025"
            )
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(go())
    assert calls == ["friend@example.org", "boom", "x@y", "x@y", "friend@example.org"]


def test_close_ends_open_connections():
    async def go():
        endpoint, starting = serve({"transport": contacts})
        server = await starting
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        writer.write(socketmap.encode(b"transport friend@example.org"))
        assert (await reader.read(4096)).endswith(b"10025,")
        server.close()
        assert await asyncio.wait_for(reader.read(4096), 5) == b""  # as when the bridge ends
        await asyncio.wait_for(server.wait_closed(), 5)
        assert not server.is_serving()
        with pytest.raises(OSError):
            await asyncio.open_connection(endpoint.host, endpoint.port)
        writer.close()

    asyncio.run(go())


# --- integration: a real Postfix routes mail through the socketmap -----------------------------


def real_servers(test):
    """Mark a test that starts Postfix, Dovecot and smtp-sink."""
    for mark in (
        pytest.mark.integration,
        pytest.mark.skipif(os.geteuid() != 0, reason="private Postfix/Dovecot instances need root"),
        pytest.mark.skipif(
            not all(shutil.which(c) for c in ("postfix", "dovecot", "smtp-sink")),
            reason="postfix, dovecot or smtp-sink not installed",
        ),
    ):
        test = mark(test)
    return test


def asking_processes(server_port: int) -> set[str]:
    """The names of the processes with a TCP connection to 127.0.0.1:server_port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[2].split(":")[1], 16) == server_port and f[3] == "01":  # ESTABLISHED
            inodes.add(f"socket:[{f[9]}]")
    names = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                names.add(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


class MapServer:
    """The socketmap server on its own event loop thread, answering from `answers` (lower-cased
    address -> OK value), which the test changes at will; every lookup is recorded."""

    def __init__(self, port: int = 0, path: Path | None = None) -> None:
        self.port = port
        self.path = path  # a unix socket instead of 127.0.0.1:port
        self.answers: dict[str, str] = {}
        self.function: socketmap.MapFunction | None = None  # when set, answers instead of `answers`
        self.fail = False
        self.asked: list[tuple[float, str, set[str]]] = []  # (monotonic time, key, asking processes)
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def _lookup(self, key: str) -> str | None:
        self.asked.append((time.monotonic(), key, asking_processes(self.port) if self.port else set()))
        if self.fail:
            raise RuntimeError("simulated failure")
        if self.function is not None:
            return self.function(key)
        return self.answers.get(key.lower())

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def call(self, function):
        """function() on the server's thread (where the map's SQLite objects must live)."""

        async def call():
            return function()

        return self._run(call())

    def start(self) -> None:
        endpoint = Endpoint(path=str(self.path)) if self.path else Endpoint("127.0.0.1", self.port)
        self._server = self._run(socketmap.start_server(endpoint, {"transport": self._lookup}))

    def stop(self) -> None:
        async def close(server: asyncio.AbstractServer) -> None:
            server.close()
            await server.wait_closed()

        if self._server:
            self._run(close(self._server))
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def connections(self) -> int:
        assert isinstance(self._server, socketmap.SocketmapServer)
        return len(self._server._connections.open)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)

    def asked_keys(self, since: float = 0.0) -> list[str]:
        return [k for t, k, _ in self.asked if t >= since]


class MailLab:
    """A lab Postfix + Dovecot (alice, alan) for `domain`, the socketmap server in this process
    and smtp-sink speaking LMTP as the bridge's nexthop (it keeps each mail in `dump`)."""

    def __init__(self, root: Path, name: str, tox_only: bool = False) -> None:
        from toxbridge.lab.dovecot import Dovecot
        from toxbridge.lab.postfix import Postfix

        self.root = _fs.prepare_root(root / name)
        self.domain = f"{name}.test"
        self.dovecot = Dovecot(
            self.root, name, {"alice": "alice-pw", "alan": "alan-pw"}, free_port(), free_port(), free_port()
        )
        self.sink_port = free_port()
        self.map = MapServer(free_port())
        self.postfix = Postfix(
            self.root,
            name,
            self.domain,
            free_port(),
            ["alice", "alan"],
            self.dovecot.lmtp_port,
            self.sink_port,
            socketmap_port=self.map.port,
            tox_only=tox_only,
        )
        self.bridge = f"toxbridge:inet:127.0.0.1:{self.sink_port}"
        self.dump = self.root / "sink"
        self._sink: subprocess.Popen | None = None

    def start(self) -> None:
        self.dump.mkdir(exist_ok=True)
        shutil.chown(self.dump, "postfix")
        with open(self.root / "smtp-sink.log", "ab") as log:
            self._sink = subprocess.Popen(
                [
                    "smtp-sink",
                    "-L",
                    "-u",
                    "postfix",
                    "-d",
                    f"{self.dump}/%H%M%S.",
                    f"127.0.0.1:{self.sink_port}",
                    "50",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        assert wait_until(lambda: port_accepts(self.sink_port), 10)
        self.map.start()
        self.dovecot.start()
        self.postfix.start()

    def stop(self) -> None:
        for step in (self.postfix.stop, self.dovecot.stop, self.map.close):
            with contextlib.suppress(Exception):
                step()
        if self._sink:
            self._sink.terminate()
            self._sink.wait(10)

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def rcpt(
        self,
        sender: str,
        recipients: list[str],
        source: str | None = None,
        session: smtplib.SMTP | None = None,
    ) -> dict[str, tuple[int, bytes]]:
        """RCPT each recipient in one SMTP transaction and send a small mail to those accepted."""
        own = session is None
        s = session or smtplib.SMTP(
            "127.0.0.1", self.postfix.smtp_port, timeout=30, source_address=(source, 0) if source else None
        )
        try:
            s.ehlo("client.example")
            s.mail(sender)
            codes = {r: s.rcpt(r) for r in recipients}
            if any(code == 250 for code, _ in codes.values()):
                s.data(f"Message-ID: <{uuid.uuid4()}@client.example>\r\nSubject: rcpt\r\n\r\nhi\r\n".encode())
            else:
                s.rset()
            return codes
        finally:
            if own:
                s.quit()

    def sendmail(self, sender: str, recipient: str) -> str:
        """Submit through sendmail(1) (no smtpd): qmgr alone routes it. Returns the Message-ID."""
        mid = f"<{uuid.uuid4()}@{self.domain}>"
        subprocess.run(
            ["sendmail", "-C", str(self.postfix.config_dir), "-f", sender, recipient],
            input=f"Message-ID: {mid}\nSubject: routed\n\nhi\n".encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        return mid

    def outcome(self, mid: str, timeout: float = 30.0) -> tuple[str, str, str, str]:
        """(relay, dsn, status, text) of the first delivery attempt of the mail with Message-ID `mid`."""
        found: list[tuple[str, str, str, str]] = []

        def logged() -> bool:
            log = self.postfix.maillog.read_text()
            queued = re.search(rf"(\w+): message-id={re.escape(mid)}", log)
            done = queued and re.search(
                rf"{queued.group(1)}: to=<[^>]*>, relay=(\S+), .*dsn=(\S+), status=(\w+) \((.*)\)", log
            )
            if done:
                relay, dsn, status, text = done.groups()
                found.append((relay, dsn, status, text))
            return bool(done)

        assert wait_until(logged, timeout, interval=0.05), (
            f"no outcome for {mid}:\n{_fs.tail(self.postfix.maillog)}"
        )
        return found[0]

    def sunk(self, mid: str) -> bool:
        return any(mid.encode() in p.read_bytes() for p in self.dump.iterdir())


@pytest.fixture(scope="module")
def lab_dir():
    root = Path(tempfile.mkdtemp(prefix="toxbridge-socketmap-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    if not os.environ.get("TOXBRIDGE_KEEP_LAB"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(lab_dir):
    lab = MailLab(lab_dir, "home")
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def fresh(lab):
    """A tag for addresses no smtpd process of the module's Postfix has looked up yet, and the map
    answering again after the test."""
    yield uuid.uuid4().hex[:8]
    lab.map.fail = False
    lab.map.function = None
    if not lab.map.running:
        lab.map.start()


@real_servers
def test_keys_postfix_sends(lab, fresh, report):
    friend, other = f"friend-{fresh}@example.org", f"friend-{fresh}+ext@example.org"
    lab.map.answers[friend] = lab.bridge
    sender = f"someone-{fresh}@example.net"
    shouted = friend.replace("friend", "Friend").replace("example.org", "Example.ORG")
    t0 = time.monotonic()
    # Trusted client (127.0.0.1 is mynetworks): relaying is allowed, the map decides the route.
    codes = lab.rcpt(sender, [shouted, other, lab.address("alan"), "AbC@tox"])
    at_smtp = lab.map.asked_keys(t0)

    assert codes[shouted][0] == 250
    # The map was not asked the address without its extension: not a contact, so the lab's default.
    assert codes[other][0] == 550 and b"the lab sends no mail beyond this machine" in codes[other][1]
    assert codes[lab.address("alan")][0] == 250 and codes["AbC@tox"][0] == 250
    assert {sender, shouted, other} <= set(at_smtp)
    assert friend not in at_smtp and "example.org" not in at_smtp and "example.net" not in at_smtp
    assert not [k for k in lab.map.asked_keys() if k != "*" and "@" not in k]
    assert not [k for k in lab.map.asked_keys() if k.lower().endswith(("@tox", "@home.test"))]
    assert "*" in lab.map.asked_keys()
    assert {p for _, _, procs in lab.map.asked for p in procs} == {"trivial-rewrite"}

    # qmgr routes the queued mail: trivial-rewrite asks again, the contact goes to the bridge.
    delivered = rf"toxbridge/lmtp\[\d+\]: \w+: to=<{re.escape(shouted)}>, relay=127.0.0.1\[127.0.0.1\]:{lab.sink_port}, .*status=sent"
    assert wait_until(lambda: re.search(delivered, lab.postfix.maillog.read_text()), 30), _fs.tail(
        lab.postfix.maillog
    )
    assert lab.map.asked_keys(t0).count(shouted) == 2
    report(
        f"keys asked during the SMTP session: {at_smtp}; by {sorted({p for _, _, ps in lab.map.asked for p in ps})}"
    )


@real_servers
def test_contact_goes_to_the_bridge_others_take_the_default_route(lab, fresh):
    friend, stranger = f"friend-{fresh}@example.org", f"stranger-{fresh}@example.org"
    lab.map.answers[friend] = lab.bridge
    alice = lab.address("alice")

    mid = lab.sendmail(alice, friend)
    relay, _, status, _ = lab.outcome(mid)
    assert (relay, status) == (f"127.0.0.1[127.0.0.1]:{lab.sink_port}", "sent")
    assert wait_until(lambda: lab.sunk(mid), 10)

    # NOTFOUND: Postfix's default route, which in the lab is an error bounce.
    mid = lab.sendmail(alice, stranger)
    assert lab.outcome(mid) == ("none", "5.7.1", "bounced", "the lab sends no mail beyond this machine")
    # Over SMTP, smtpd refuses an address whose route is the error transport at RCPT time.
    code, text = lab.rcpt(alice, [stranger])[stranger]
    assert code == 550 and b"5.7.1" in text


def bridge_routes(lab: MailLab, book_text: str = ""):
    """The bridge's own Routes for the lab household (alice, alan), answering the map as the
    daemon does; returned with its roster, so a test can learn pairings."""
    from toxbridge.contacts import book
    from toxbridge.contacts.roster import Roster
    from toxbridge.contacts.routes import Routes

    mailboxes = ("alice", "alan")
    roster = lab.map.call(lambda: Roster(":memory:"))
    own = (lab.address("alice"), lab.address("alan"))
    routes = Routes(book.parse(book_text, "contacts.yaml", mailboxes), roster, own, mailboxes=mailboxes)
    lab.map.function = lambda key: lab.bridge if routes.transport(key) else None
    return routes, roster


@real_servers
def test_an_extension_goes_where_its_address_goes_and_arrives_as_written(lab, fresh):
    """Issue 15.7: Postfix asks the socketmap only the address as written, so the bridge looks
    `friend+news@` up as `friend@` (recipient_delimiter, main.cf.toxbridge and toxbridge.yaml)."""
    friend = f"friend-{fresh}@example.org"
    bridge_routes(lab, f"- {{name: Friend, addresses: [{friend}], tox_id: '{'ab' * 32}'}}\n")
    alice, news = lab.address("alice"), f"Friend-{fresh}+News@example.org"

    mid = lab.sendmail(alice, news)
    relay, _, status, _ = lab.outcome(mid)
    assert (relay, status) == (f"127.0.0.1[127.0.0.1]:{lab.sink_port}", "sent"), _fs.tail(lab.postfix.maillog)
    assert wait_until(lambda: lab.sunk(mid), 10)
    dump = next(p.read_bytes() for p in lab.dump.iterdir() if mid.encode() in p.read_bytes())
    assert f"X-Rcpt-Args: <{news}>".encode() in dump  # the bridge is handed the address as written
    assert lab.rcpt(alice, [news])[news][0] == 250  # smtpd agrees at RCPT time
    # Only the delimiter splits: another character is another address, the lab's default route.
    other = f"friend-{fresh}-news@example.org"
    assert lab.outcome(lab.sendmail(alice, other))[2] == "bounced"


@real_servers
def test_a_pairing_not_every_identity_reaches_takes_the_ordinary_route(lab, fresh):
    """Issue 15.5: Postfix asks without the sender. alice's identity learned pal's key, alan's is no
    friend of it: pal's address takes the ordinary route (the lab's default) for both, so alan's
    mail does not reach the bridge only to bounce; once alan's identity reaches it, Tox for both."""
    pal = f"pal-{fresh}@example.org"
    routes, roster = bridge_routes(lab)
    lab.map.call(lambda: roster.learn("alice", pal, b"\xc3" * 32))
    friends = {"alice"}
    routes.reaches = lambda mailbox, key: mailbox in friends

    alice, alan = lab.address("alice"), lab.address("alan")
    assert lab.outcome(lab.sendmail(alan, pal)) == (
        "none",
        "5.7.1",
        "bounced",
        "the lab sends no mail beyond this machine",
    )
    friends.add("alan")
    relay, _, status, _ = lab.outcome(lab.sendmail(alice, pal))  # another pair: qmgr asks afresh
    assert (relay, status) == (f"127.0.0.1[127.0.0.1]:{lab.sink_port}", "sent")


@real_servers
def test_bridge_down_fails_closed_and_own_mail_flows(lab, fresh, report):
    friend, stranger = f"friend-{fresh}@example.org", f"stranger-{fresh}@example.org"
    lab.map.answers[friend] = lab.bridge
    alice, alan = lab.address("alice"), lab.address("alan")
    inbox = len(lab.dovecot.fetch_inbox("alan"))
    lab.map.stop()

    # Submission from this host: other addresses 451, own domain and @tox as usual.
    tox = f"Friend-{fresh}@tox"
    keep_open = smtplib.SMTP("127.0.0.1", lab.postfix.smtp_port, timeout=30)
    codes = lab.rcpt(alice, [stranger, alan, tox], session=keep_open)
    assert codes[stranger] == (451, f"4.3.0 <{stranger}>: Temporary lookup failure".encode())
    assert codes[alan][0] == 250 and codes[tox][0] == 250
    assert wait_until(lambda: len(lab.dovecot.fetch_inbox("alan")) > inbox, 30)
    assert wait_until(
        lambda: re.search(
            rf"to=<{tox}>, relay=127.0.0.1\[127.0.0.1\]:{lab.sink_port}, .*status=sent",
            lab.postfix.maillog.read_text(),
        ),
        30,
    )
    # An outside client gets the same 451 where 554 Relay access denied would come: refused either way.
    outside = lab.rcpt(
        f"mallory-{fresh}@example.net", [f"x-{fresh}@example.org", alan, tox], source="127.0.0.2"
    )
    assert outside[f"x-{fresh}@example.org"][0] == 451
    assert outside[alan][0] == 250
    assert outside[tox][0] == 554

    # Mail already queued for a contact is deferred, not bounced, not sent elsewhere ...
    mid = lab.sendmail(alice, friend)
    assert lab.outcome(mid) == ("none", "4.3.0", "deferred", "address resolver failure")
    failed = time.monotonic()

    # ... and so is it when the map answers TEMP (an exception in the lookup function).
    lab.map.fail = True
    lab.map.start()
    assert lab.rcpt(alice, [f"y-{fresh}@example.org"])[f"y-{fresh}@example.org"][0] == 451
    lab.map.fail = False

    # Back up: a queue run delivers it to the bridge, but not before qmgr's cached failure for
    # this (sender, recipient) expires, 30 s after the failed lookup. Flushed once a second.
    t_up = time.monotonic()
    runs = 0
    while not lab.sunk(mid):
        assert time.monotonic() - failed < 45, _fs.tail(lab.postfix.maillog)
        lab.postfix.flush()
        runs += 1
        wait_until(lambda: lab.sunk(mid), 1)
    took = time.monotonic() - failed
    assert 29 <= took <= 33, took
    report(
        f"bridge down: 451 4.3.0 at RCPT, queued mail deferred; back up {t_up - failed:.1f} s after the "
        f"failed lookup, delivered {took:.1f} s after it ({runs} queue flushes)"
    )

    # smtpd keeps the failed answer per process: the session that saw 451 still does; a parallel
    # session (necessarily another smtpd process) is asked afresh.
    lab.map.answers[stranger] = lab.bridge
    parallel = lab.rcpt(alice, [stranger])
    assert parallel[stranger][0] == 250
    assert lab.rcpt(alice, [stranger], session=keep_open)[stranger][0] == 451
    keep_open.quit()


@real_servers
def test_how_long_a_changed_answer_takes(lab, fresh, report):
    """(b): NOTFOUND -> OK shows at once; OK -> NOTFOUND waits out qmgr's 30 s pair cache."""
    friend = f"friend-{fresh}@example.org"
    alice, alan = lab.address("alice"), lab.address("alan")

    # NOTFOUND, so the lab's default: a bounce (qmgr resolves the bounce's recipient next).
    assert lab.outcome(lab.sendmail(alice, friend))[2] == "bounced"
    lab.map.answers[friend] = lab.bridge
    relay, _, status, _ = lab.outcome(lab.sendmail(alice, friend))
    assert (relay, status) == (f"127.0.0.1[127.0.0.1]:{lab.sink_port}", "sent")  # at once
    looked_up = max(t for t, k, _ in lab.map.asked if k == friend)

    del lab.map.answers[friend]
    stale = 0
    while True:
        status = lab.outcome(lab.sendmail(alice, friend))[2]
        if status == "bounced":
            break
        stale += 1
        assert time.monotonic() - looked_up < 45, "qmgr kept the old route for more than 45 s"
        time.sleep(1)
    fresh_after = max(t for t, k, _ in lab.map.asked if k == friend) - looked_up
    assert 29 <= fresh_after <= 32, fresh_after
    assert stale >= 25  # one a second
    report(
        f"OK -> NOTFOUND: {stale} new mails of the same (sender, recipient) still went to the bridge; "
        f"qmgr asked again {fresh_after:.1f} s after its last lookup"
    )

    # The cache holds one (sender, recipient) pair: another sender is resolved afresh at once.
    lab.map.answers[friend] = lab.bridge
    assert lab.outcome(lab.sendmail(alan, friend))[2] == "sent"

    # smtpd: each process keeps its RCPT answers. One session looks an address up (NOTFOUND, the
    # lab's error transport: 550), the map changes, a parallel session (another smtpd) sees the
    # new answer, the first session's process still the old one.
    later = f"later-{fresh}@example.org"
    first = smtplib.SMTP("127.0.0.1", lab.postfix.smtp_port, timeout=30)
    assert lab.rcpt(alice, [later], session=first)[later][0] == 550
    lab.map.answers[later] = lab.bridge
    assert lab.rcpt(alice, [later])[later][0] == 250
    assert lab.rcpt(alice, [later], session=first)[later][0] == 550
    first.quit()


@real_servers
def test_tox_only_bounces_non_contacts(lab_dir):
    lab = MailLab(lab_dir, "toxonly", tox_only=True)
    try:
        lab.start()
        alice, stranger = lab.address("alice"), "stranger@example.org"
        code, text = lab.rcpt(alice, [stranger])[stranger]
        assert (code, text) == (
            550,
            (
                b"5.1.1 <stranger@example.org>: Recipient address rejected: "
                b"this address is not a Tox contact of this household"
            ),
        )
        mid = lab.sendmail(alice, stranger)
        assert lab.outcome(mid) == (
            "none",
            "5.1.1",
            "bounced",
            "this address is not a Tox contact of this household",
        )
        assert wait_until(lambda: lab.dovecot.fetch_inbox("alice"), 30)
        (bounce,) = lab.dovecot.fetch_inbox("alice")
        assert b"<stranger@example.org>: this address is not a Tox contact of this household" in bounce
        assert b"Status: 5.1.1" in bounce
        assert mid.encode() in bounce
        # Contacts, @tox and the household itself are unaffected.
        lab.map.answers["friend@example.org"] = lab.bridge
        assert lab.outcome(lab.sendmail(alice, "friend@example.org"))[2] == "sent"
        assert lab.rcpt(alice, ["AbC@tox", lab.address("alan")]) == {
            "AbC@tox": (250, b"2.1.5 Ok"),
            lab.address("alan"): (250, b"2.1.5 Ok"),
        }
    finally:
        lab.stop()


def root_of(pid: str) -> str | None:
    """A process's root directory; None once it is gone (other Postfixes on the machine come and
    go between the listing and the look)."""
    try:
        return os.readlink(f"/proc/{pid}/root")
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_chrooted_trivial_rewrite_reaches_the_unix_socketmap(lab_dir):
    """Debian runs trivial-rewrite chrooted in the queue directory. The shipped relative path
    (socketmap:unix:toxbridge/socketmap, relative to the queue directory) reaches the bridge's
    socket from inside that chroot, also when it connects again after closing an idle connection."""
    from toxbridge.lab.postfix import Postfix

    root = _fs.prepare_root(lab_dir / "chroot")
    postfix = Postfix(
        root, "chroot", "chroot.test", free_port(), ["alice"], free_port(), None, chrooted=("rewrite/unix",)
    )
    table = MapServer(path=postfix.socketmap_socket)
    table.answers = {
        "first@elsewhere.example": "error:5.1.2 first answer through the chroot",
        "second@elsewhere.example": "error:5.1.2 second answer through the chroot",
    }
    try:
        postfix.write_config()  # makes the socket directory, which the map's socket lives in
        table.start()
        postfix.start()

        def rcpt(address: str) -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as s:
                s.ehlo("client.example")
                s.mail("alice@chroot.test")
                return s.rcpt(address)

        assert rcpt("first@elsewhere.example") == (
            550,
            b"5.1.2 <first@elsewhere.example>: Recipient address rejected: first answer through the chroot",
        )
        (rewrite,) = [p for p in pids_of("trivial-rewrite") if root_of(p) == str(postfix.queue_dir)]
        assert wait_until(lambda: table.connections == 0, 30), "Postfix kept its idle connection"
        assert rcpt("second@elsewhere.example")[1].endswith(b"second answer through the chroot")
        assert root_of(rewrite) == str(postfix.queue_dir)  # the same, chrooted process
    finally:
        postfix.stop()
        table.close()


def pids_of(command: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == command:
                found.append(pid)
    return found
