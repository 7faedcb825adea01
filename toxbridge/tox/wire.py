"""The bridge-to-bridge format. Pure: no I/O, every limit enforced while parsing.

One mail travels as one Tox file transfer whose file_id is the SHA-256 of the payload:

    payload = MAGIC "TXBM" | version u8 | header length u16 | header | message bytes
    header  = UTF-8 JSON {"from": sender, "to": [recipient, ...], "size": len(message)}
              and, for a compressed message, "encoding": "zlib"

The message bytes follow raw (no hex, no base64), so the payload is the mail plus a few dozen
bytes; or, to a peer that announced "zlib", as one zlib stream (RFC 1950) of its own when that
makes it smaller (`size` is then the length after inflating, and the receiver refuses a stream
that inflates to more, while inflating). The receiver answers with a result packet (a Tox custom
lossless packet):

    0xA1 | file_id (32) | count u8 | count × (code u16 | text length u8 | text UTF-8)

one entry per envelope recipient, in envelope order; a single entry answers for all of them
(used when the payload could not be read at all). On connect, bridges greet each other:

    0xA0 | protocol version u8 | software name UTF-8
    0xA2 | capability words, ASCII, separated by spaces        (sent right after the greeting)

A bridge that predates capabilities sends no 0xA2 packet (and ignores ours): it gets every mail
uncompressed.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from dataclasses import dataclass

from ..mail.addr_spec import is_addr_spec
from ..mail.smtpreply import Reply

MAGIC = b"TXBM"
VERSION = 1
PREFIX = struct.Struct(">4sBH")  # magic, version, header length
MAX_HEADER = 16 * 1024
MAX_RECIPIENTS = 255
FILE_ID_SIZE = 32
MAIL_FILENAME = b"toxbridge-mail.eml"

PACKET_GREETING = 0xA0
PACKET_RESULT = 0xA1
PACKET_CAPABILITIES = 0xA2
_CAPABILITY_WORD = re.compile(rb"[a-z0-9][a-z0-9-]{0,31}")
MAX_PACKET = 1373  # tox_max_custom_packet_size() in toxcore 0.2.18
MAX_REPLY_TEXT = 255


# Compression (measured in docs/benchmarks.md, "Levers"): the first TRIAL bytes of a message
# are compressed on their own; a message whose trial shrinks by less than MIN_GAIN (an attachment
# that is compressed already) goes raw. Up to FAST_ABOVE bytes the default level, above it level
# 1: on a big mail the CPU time competes with the link (72 against 23 MiB/s here, 59 % against
# 57 % of the size on the bench's hex text).
ZLIB = "zlib"
TRIAL = 64 * 1024
MIN_GAIN = 0.1
FAST_ABOVE = 1 << 20
INFLATE_STEP = 1 << 20  # inflated bytes per step: a small chunk cannot make a big buffer


class WireError(ValueError):
    """Bytes from a peer that do not follow the format; the text says what is wrong."""


class MessageTooBig(WireError):
    """The message is (or inflates to) more than the receiver takes: 552 5.3.4."""


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    size: int  # length of the message bytes (after inflating, when compressed)
    encoding: str = ""  # "" (raw) or ZLIB


def file_id_of(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


@dataclass(frozen=True)
class Payload:
    """A payload as pieces: the head (prefix and envelope header), then the message in one or
    more pieces (bytes or memoryviews). Never joined: a 50 MiB mail is not copied to send it."""

    parts: tuple
    file_id: bytes

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def chunk(self, position: int, length: int) -> bytes:
        pieces, start, stop = [], 0, position + length
        for part in self.parts:
            end = start + len(part)
            if position < end and stop > start:
                pieces.append(part[max(position, start) - start : min(stop, end) - start])
            if end >= stop:
                break
            start = end
        return b"".join(pieces)


def payload_of(envelope: Envelope, *message, compress: bool = False) -> Payload:
    """The payload for a message given as one or more pieces; with `compress`, as a zlib stream
    when that shrinks it (`worth_compressing`). The same message gives the same bytes every time
    (so a retry has the same file_id), and each message has a compression context of its own:
    nothing of one mail shows in the size of another."""
    if envelope.size != sum(len(piece) for piece in message):
        raise ValueError("envelope size does not match the message")
    if envelope.encoding:
        raise ValueError("payload_of chooses the encoding itself")
    if not 1 <= len(envelope.recipients) <= MAX_RECIPIENTS:
        raise ValueError(f"between 1 and {MAX_RECIPIENTS} recipients per payload")
    encoding = ""
    if compress and worth_compressing(message):
        message = deflate(message, envelope.size)
        encoding = ZLIB
    head = payload_head(envelope, encoding)
    digest = hashlib.sha256(head)
    for piece in message:
        digest.update(piece)
    return Payload((head, *message), digest.digest())


def payload_head(envelope: Envelope, encoding: str = "") -> bytes:
    """The bytes before the message in a payload with this envelope and encoding. The receiver
    of a compressed mail rebuilds the raw one's (encoding "") to know the file_id that the same
    mail has when it is sent uncompressed (incoming.py: a retry may go either way)."""
    fields: dict = {"from": envelope.sender, "to": list(envelope.recipients), "size": envelope.size}
    if encoding:
        fields["encoding"] = encoding
    header = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    if len(header) > MAX_HEADER:
        raise ValueError("envelope header too large")
    return PREFIX.pack(MAGIC, VERSION, len(header)) + header


def worth_compressing(message: tuple) -> bool:
    """Whether the message's first TRIAL bytes shrink by at least MIN_GAIN."""
    trial = bytearray()
    for piece in message:
        trial += piece[: TRIAL - len(trial)]
        if len(trial) >= TRIAL:
            break
    return bool(trial) and len(zlib.compress(trial)) <= len(trial) * (1 - MIN_GAIN)


def deflate(message: tuple, size: int) -> tuple[bytes, ...]:
    """The message's pieces as one zlib stream, in a context of its own."""
    compressor = zlib.compressobj(1 if size > FAST_ABOVE else zlib.Z_DEFAULT_COMPRESSION)
    out = [compressor.compress(piece) for piece in message]
    out.append(compressor.flush())
    return tuple(piece for piece in out if piece)


class PayloadParser:
    """Reads a payload fed in pieces of any size, in order.

    `feed` returns the Envelope as soon as the header is complete (so a receiver can refuse a
    bad transfer early) and None before; the message bytes are counted, not kept: the caller
    owns the buffer. A compressed message is inflated as it arrives, step by step, and counted
    after inflating: MessageTooBig as soon as it would exceed its `size` (which is at most
    `max_message`), so a small transfer cannot become a big mail. `finish` checks that exactly
    `size` message bytes arrived (and that a zlib stream ended).
    """

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._head = bytearray()  # prefix and header only: message bytes are never copied here
        self._header_end = 0
        self._inflater: zlib._Decompress | None = None
        self.envelope: Envelope | None = None
        self.message_bytes = 0  # after inflating
        self.eight_bit = False  # a message byte over 127 (after inflating)

    @property
    def message_offset(self) -> int:
        """Where the message (raw or compressed) starts in the payload."""
        return self._header_end

    def feed(self, data: bytes) -> Envelope | None:
        if self.envelope is not None:
            self._message(data)
            return None
        view = memoryview(data)
        if not self._header_end:
            view = self._take(view, PREFIX.size)
            if not MAGIC.startswith(bytes(self._head[:4])):
                raise WireError("not a toxbridge payload (bad magic)")
            if len(self._head) < PREFIX.size:
                return None
            _, version, header_len = PREFIX.unpack_from(self._head)
            if version != VERSION:
                raise WireError(f"unsupported payload version {version}")
            if header_len > MAX_HEADER:
                raise WireError(f"envelope header of {header_len} bytes is over {MAX_HEADER}")
            self._header_end = PREFIX.size + header_len
        view = self._take(view, self._header_end)
        if len(self._head) < self._header_end:
            return None
        self.envelope = _parse_header(bytes(self._head[PREFIX.size :]), self.max_message)
        if self.envelope.encoding == ZLIB:
            self._inflater = zlib.decompressobj()
        self._head = bytearray()
        self._message(view)
        return self.envelope

    def _take(self, view: memoryview, upto: int) -> memoryview:
        """Move bytes from `view` into the head until it is `upto` long; return the rest."""
        wanted = max(0, upto - len(self._head))
        self._head += view[:wanted]
        return view[wanted:]

    def _message(self, data) -> None:
        if self._inflater is None:
            self._count(data)
            return
        assert self.envelope is not None  # an inflater exists only once the envelope is read
        while data:
            if self._inflater.eof:
                raise WireError("bytes after the end of the compressed message")
            left = self.envelope.size - self.message_bytes
            try:
                out = self._inflater.decompress(data, min(left + 1, INFLATE_STEP))
            except zlib.error as e:
                raise WireError(f"compressed message is damaged ({e})") from None
            if len(out) > left:
                raise MessageTooBig(
                    f"compressed message inflates to more than its {self.envelope.size} bytes"
                )
            self._count(out)
            data = self._inflater.unconsumed_tail
        if self._inflater.unused_data:
            raise WireError("bytes after the end of the compressed message")

    def _count(self, data) -> None:
        assert self.envelope is not None  # counted only once the envelope is read
        self.message_bytes += len(data)
        if self.message_bytes > self.envelope.size:
            raise WireError("more message bytes than the envelope announced")
        if not self.eight_bit:  # a memoryview has no isascii; only a first piece is one
            self.eight_bit = not (data if isinstance(data, bytes) else bytes(data)).isascii()

    def finish(self) -> Envelope:
        if self.envelope is None:
            raise WireError("payload ended inside the envelope header")
        if self._inflater is not None and not self._inflater.eof:
            raise WireError("payload ended inside the compressed message")
        if self.message_bytes != self.envelope.size:
            raise WireError(f"payload ended after {self.message_bytes} of {self.envelope.size} message bytes")
        return self.envelope


def _parse_header(raw: bytes, max_message: int) -> Envelope:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WireError("envelope header is not UTF-8 JSON") from None
    if not isinstance(header, dict) or set(header) - {"encoding"} != {"from", "to", "size"}:
        raise WireError("envelope header must have exactly from, to and size (and maybe encoding)")
    sender, recipients, size = header["from"], header["to"], header["size"]
    encoding = header.get("encoding", "")
    if encoding != ZLIB and "encoding" in header:
        raise WireError("envelope encoding must be zlib")
    if not isinstance(sender, str) or not _is_clean(sender, allow_empty=True):
        raise WireError("envelope sender is not a clean address")
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise WireError(f"envelope needs 1 to {MAX_RECIPIENTS} recipients")
    if not all(isinstance(r, str) and _is_clean(r) for r in recipients):
        raise WireError("envelope recipient is not a clean address")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise WireError("envelope size is not a non-negative integer")
    if size > max_message:
        raise MessageTooBig(f"message of {size} bytes is over the limit of {max_message}")
    return Envelope(sender=sender, recipients=tuple(recipients), size=size, encoding=encoding)


def _is_clean(address: str, allow_empty: bool = False) -> bool:
    """One mail address (addr-spec), safe in an LMTP command and in our own headers; the empty
    (null) sender where allowed."""
    return allow_empty if not address else is_addr_spec(address)


def encode_result(file_id: bytes, replies: list[Reply]) -> bytes:
    """A result packet; texts are shortened so the packet fits one custom packet."""
    if len(file_id) != FILE_ID_SIZE:
        raise ValueError("file_id must be 32 bytes")
    if not 1 <= len(replies) <= MAX_RECIPIENTS:
        raise ValueError(f"between 1 and {MAX_RECIPIENTS} replies")
    head = bytes([PACKET_RESULT]) + file_id + bytes([len(replies)])
    budget = min(MAX_REPLY_TEXT, (MAX_PACKET - len(head)) // len(replies) - 3)
    if budget < 0:
        raise ValueError("too many replies for one packet")
    out = bytearray(head)
    for reply in replies:
        if not 200 <= reply.code <= 599:
            raise ValueError(f"reply code {reply.code} out of range")
        text = _shorten(reply.text, budget)
        out += struct.pack(">HB", reply.code, len(text)) + text
    return bytes(out)


def _shorten(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8", "replace")  # a stray surrogate must not stop the answer
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8")


def decode_result(packet: bytes) -> tuple[bytes, list[Reply]]:
    """A result packet → (file_id, replies). Raises WireError."""
    if len(packet) > MAX_PACKET:
        raise WireError("result packet too long")
    if len(packet) < 2 + FILE_ID_SIZE or packet[0] != PACKET_RESULT:
        raise WireError("not a result packet")
    file_id = packet[1 : 1 + FILE_ID_SIZE]
    count = packet[1 + FILE_ID_SIZE]
    if count == 0:
        raise WireError("result packet without replies")
    pos = 2 + FILE_ID_SIZE
    replies = []
    for _ in range(count):
        if pos + 3 > len(packet):
            raise WireError("result packet truncated")
        code, length = struct.unpack_from(">HB", packet, pos)
        pos += 3
        if not 200 <= code <= 599:
            raise WireError(f"reply code {code} out of range")
        raw = packet[pos : pos + length]
        if len(raw) != length:
            raise WireError("result packet truncated")
        pos += length
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("reply text is not UTF-8") from None
        if any(c < " " for c in text):
            raise WireError("reply text has control characters")
        replies.append(Reply(code, text))
    if pos != len(packet):
        raise WireError("trailing bytes after the replies")
    return file_id, replies


def encode_greeting(software: str) -> bytes:
    return bytes([PACKET_GREETING, VERSION]) + software.encode("utf-8")[:200]


def decode_greeting(packet: bytes) -> tuple[int, str]:
    if len(packet) < 2 or packet[0] != PACKET_GREETING:
        raise WireError("not a greeting packet")
    return packet[1], packet[2:].decode("utf-8", "replace")


def encode_capabilities(words: tuple[str, ...]) -> bytes:
    return bytes([PACKET_CAPABILITIES]) + " ".join(words).encode("ascii")


def decode_capabilities(packet: bytes) -> frozenset[str]:
    """The words a peer announced. Words this bridge does not know mean nothing; a word that is
    not lower-case letters, digits and dashes (it would reach the log) is dropped."""
    if len(packet) > MAX_PACKET or packet[:1] != bytes([PACKET_CAPABILITIES]):
        raise WireError("not a capabilities packet")
    words = packet[1:].split(b" ")
    return frozenset(w.decode() for w in words if _CAPABILITY_WORD.fullmatch(w))
