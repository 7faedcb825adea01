"""Bench mails and an SMTP client that injects them, recording when Postfix accepted each one.

smtp-source cannot say when each mail was accepted, and latency is measured per mail (SMTP 250
after DATA → first visible in IMAP), so this is a small asyncio SMTP client doing what
smtp-source does: a few parallel sessions, each sending mail after mail on one connection, with
MAIL/RCPT/DATA pipelined (RFC 2920; Postfix announces PIPELINING). Every mail carries a unique
X-Bench-Id header (and Message-ID) by which the IMAP watcher finds it.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import random
import time
from dataclasses import dataclass, field

LINE = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"  # 80 bytes


@dataclass(eq=False)
class Mail:
    bench_id: str
    sender: str
    recipient: str
    data: bytes  # CRLF lines, no line starts with ".", ends with CRLF
    started: float | None = None  # monotonic: MAIL FROM written
    accepted: float | None = None  # monotonic: 250 after DATA read
    accepted_wall: float | None = None
    reply: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reply.startswith("2")

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def started_at(self) -> float:
        """`started`, of a mail that was sent."""
        assert self.started is not None, f"{self.bench_id} was not sent"
        return self.started

    @property
    def accepted_at(self) -> float:
        """`accepted`, of a mail that was accepted."""
        assert self.accepted is not None, f"{self.bench_id} was not accepted"
        return self.accepted


def _head(bench_id: str, sender: str, recipient: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: bench {bench_id}\r\n"
        f"Date: {email.utils.formatdate(localtime=True)}\r\n"
        f"Message-ID: <{bench_id}@bench.invalid>\r\nX-Bench-Id: {bench_id}\r\n\r\n"
    ).encode()


def _fill(block: bytes, need: int) -> bytes:
    """Exactly `need` bytes of CRLF lines from `block` (whole lines, the last one lengthened)."""
    body = block * (need // len(block)) + block[: need % len(block)]
    body = body[: body.rfind(b"\r\n") + 2]
    rest = need - len(body)
    return body[:-2] + b"x" * rest + b"\r\n" if rest else body


# What the bodies are made of (`--body`; compression depends on it, nothing else does):
#   line    small: LINE repeated (zlib: 3 % of the size); large: hex text of random bytes (59 %)
#   words   prose-like text: random words of a 2,000-word vocabulary, Zipf-distributed (~40 %,
#           about what zlib makes of English text)
#   base64  random bytes in base64, as an attached photo or archive (~77 %)
BODIES = ("line", "words", "base64")
BODY = "line"  # set by bench.run from --body


def _lines(text: bytes, width: int = 76) -> bytes:
    return b"".join(text[i : i + width] + b"\r\n" for i in range(0, len(text) - width + 1, width))


def _words_block(seed: bytes, size: int = 1 << 16) -> bytes:
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    vocabulary = [
        "".join(rng.choices(letters, weights=range(26, 0, -1), k=rng.randint(2, 9))) for _ in range(2000)
    ]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    lines, line, total = [], "", 0
    words = iter(rng.choices(vocabulary, weights, k=size))  # more than the block needs
    while total < size:
        word = next(words)
        if len(line) + len(word) + 1 > 72:
            lines.append(line)
            total += len(line) + 2
            line = ""
        line = f"{line} {word}" if line else word.capitalize()
    return "".join(x + "\r\n" for x in lines).encode()


@functools.lru_cache(maxsize=8)
def _block_of(body: str, seed: bytes, large: bool) -> bytes:
    if body == "words":
        return _words_block(seed)
    if body == "base64":
        return _lines(base64.b64encode(seed))
    return _lines(seed.hex().encode()) if large else LINE


def _block(seed: bytes, large: bool) -> bytes:
    return _block_of(BODY, seed, large)


_SMALL_SEED = b"toxbridge bench small mails"


def compose(bench_id: str, sender: str, recipient: str, size: int) -> Mail:
    """A mail of exactly `size` bytes (at least a header and one line), printable ASCII lines."""
    head = _head(bench_id, sender, recipient)
    block = _block(random.Random(_SMALL_SEED).randbytes(1 << 16), large=False)
    return Mail(bench_id, sender, recipient, head + _fill(block, max(size - len(head), len(LINE))))


def compose_large(bench_id: str, sender: str, recipient: str, size: int, seed: bytes) -> Mail:
    """A large mail of exactly `size` bytes whose body is made from `seed` (random bytes), a block
    of CRLF lines repeated (hex text by default, see BODIES): cheap to build."""
    head = _head(bench_id, sender, recipient)
    return Mail(bench_id, sender, recipient, head + _fill(_block(seed, large=True), size - len(head)))


class SMTPError(ConnectionError):
    pass


async def _reply(reader: asyncio.StreamReader) -> str:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPError("server closed the connection")
        lines.append(line.decode("ascii", "replace").rstrip("\r\n"))
        if line[3:4] != b"-":
            return " | ".join(lines)


async def _session(host: str, port: int, queue: asyncio.Queue, timeout: float) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 16), timeout)
    try:
        greeting = await asyncio.wait_for(_reply(reader), timeout)
        if not greeting.startswith("220"):
            raise SMTPError(f"greeting: {greeting}")
        writer.write(b"EHLO bench.invalid\r\n")
        ehlo = await asyncio.wait_for(_reply(reader), timeout)
        if not ehlo.startswith("250"):
            raise SMTPError(f"EHLO: {ehlo}")
        while True:
            try:
                mail: Mail = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            mail.started = time.monotonic()
            writer.write(f"MAIL FROM:<{mail.sender}>\r\nRCPT TO:<{mail.recipient}>\r\nDATA\r\n".encode())
            replies = [await asyncio.wait_for(_reply(reader), timeout) for _ in range(3)]
            if not replies[2].startswith("354"):
                mail.reply = " / ".join(replies)
                writer.write(b"RSET\r\n")
                await asyncio.wait_for(_reply(reader), timeout)
                continue
            writer.write(mail.data)
            writer.write(b".\r\n")
            await writer.drain()
            mail.reply = await asyncio.wait_for(_reply(reader), timeout)
            mail.accepted = time.monotonic()
            mail.accepted_wall = time.time()
        writer.write(b"QUIT\r\n")
        try:
            await asyncio.wait_for(_reply(reader), 5)
        except (TimeoutError, SMTPError):
            pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def inject_async(
    port: int, mails: list[Mail], sessions: int = 4, timeout: float = 120.0, host: str = "127.0.0.1"
) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    for mail in mails:
        if any(line.startswith(b".") for line in mail.data.split(b"\r\n")):
            raise ValueError("bench mails must not need dot-stuffing")
        queue.put_nowait(mail)
    await asyncio.gather(
        *(_session(host, port, queue, timeout) for _ in range(max(1, min(sessions, len(mails)))))
    )


def inject(port: int, mails: list[Mail], sessions: int = 4, timeout: float = 120.0) -> None:
    """Send `mails` over `sessions` parallel SMTP sessions; each Mail gets started/accepted/reply."""
    asyncio.run(inject_async(port, mails, sessions, timeout))
    refused = [m for m in mails if not m.ok]
    if refused:
        raise SMTPError(f"{len(refused)} of {len(mails)} mails refused, first: {refused[0].reply}")
