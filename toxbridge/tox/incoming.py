"""Receiving mail from a Tox friend and handing it to the household's Dovecot.

An arriving transfer is written to a partial file in the state directory (so a broken transfer
resumes where it stopped when the sender retries: same file_id, toxcore seek), then checked
(length, SHA-256 = file_id, envelope) and delivered to the mailbox of the identity that received
it, streamed from that file (a big mail is never whole in memory). The outcome is recorded (so
a repeat is answered from the record, not delivered twice) and sent back as a result packet. Anything a friend sends that does not fit is cancelled and logged
once; nothing of it reaches a mailbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..contacts.sender_check import Verdict
from ..mail import headers, trust_headers
from ..mail.lmtp_out import Spooled
from ..mail.smtpreply import Reply
from . import wire
from .delivered import DeliveryStore
from .errors import ToxError, ToxSendQueueFull
from .library import FILE_CONTROL_CANCEL, FILE_CONTROL_RESUME, FILE_KIND_AVATAR, FILE_KIND_DATA
from .node import ToxNode
from .partial import Incoming, Partials, inflate_file, read_at

log = logging.getLogger("toxbridge.receiver")

# Transfers one friend may have arriving at once; more are refused (4.x, the sender retries).
MAX_INCOMING_PER_FRIEND = 16
ANSWER_RETRIES, ANSWER_RETRY_SECONDS = 5, 0.2  # a full send queue: tries after 0.2, 0.4, ... 1 s
# The message's header is read into memory up to this much (Postfix's header_size_limit is
# 100 KiB); the body is streamed from the file. A header that goes on beyond it is not seen
# whole, and fails the sender check (Friends.vet).
HEAD_LIMIT = 256 * 1024

Deliver = Callable[[str, Spooled], Awaitable[Reply]]  # (envelope sender, message) -> Dovecot's reply
Vet = Callable[
    [bytes, wire.Envelope, headers.Header], Verdict
]  # (friend's key, envelope, header) -> may they send it?


class Receiver:
    """Incoming transfers of one Tox identity."""

    def __init__(
        self,
        node: ToxNode,
        max_message: int,
        hostname: str,
        mailbox: str,
        address: str,
        deliver: Deliver,
        store: DeliveryStore,
        partial_dir: Path,
        vet: Vet,
        forged_sender: str = "reject",
        *,
        partials: Partials,
    ) -> None:
        self._node = node
        self._max_message = max_message
        self._max_payload = max_message + wire.MAX_HEADER + wire.PREFIX.size
        self._hostname = hostname
        self._mailbox = mailbox
        self._address = address
        self._deliver = deliver
        self._store = store
        self._partial_dir = partial_dir
        self._vet = vet
        self._forged_sender = forged_sender  # reject | flag
        self._partials = partials  # the room partial files may take, shared by every identity
        self._incoming: dict[tuple[int, int], Incoming] = {}
        self._delivering: set[bytes] = set()
        self._flooding: set[int] = set()  # friends told "too many at once" in this burst
        self._tasks: set[asyncio.Task] = set()

    def on_file_recv(self, friend: int, number: int, kind: int, size: int, filename: bytes) -> None:
        if kind == FILE_KIND_AVATAR:  # chat apps offer their avatar on every connection: no noise
            log.debug("friend %s offered its avatar; declined", self._node.friend_label(friend))
            self._cancel(friend, number)
            return
        if kind != FILE_KIND_DATA or filename != wire.MAIL_FILENAME:
            log.warning(
                "friend %s offered a file that is not a mail (kind %d); refused",
                self._node.friend_label(friend),
                kind,
            )
            self._cancel(friend, number)
            return
        file_id = self._node.file_id(friend, number)
        if size > self._max_payload:
            log.warning(
                "friend %s offered a mail of %d bytes, over the limit; refused",
                self._node.friend_label(friend),
                size,
            )
            self._refuse(
                friend,
                number,
                file_id,
                Reply(552, f"5.3.4 message too big for this household (limit {self._max_message} bytes)"),
            )
            return
        known = self._store.lookup(file_id, self._mailbox)
        if known is not None:
            log.info(
                "%s: repeat of a mail delivered before; answered from the record (%s)",
                file_id.hex()[:12],
                known,
            )
            self._answer(friend, file_id, known)
            self._cancel(friend, number)
            return
        arriving = [i for i in self._incoming.values() if i.friend == friend]
        if file_id in self._delivering or any(i.file_id == file_id for i in arriving):
            log.info(
                "%s: already arriving from friend %s; the repeat is refused for now",
                file_id.hex()[:12],
                self._node.friend_label(friend),
            )
            self._refuse(
                friend, number, file_id, Reply(451, "4.3.2 this mail is already arriving; try again later")
            )
            return
        if len(arriving) >= MAX_INCOMING_PER_FRIEND:
            if friend not in self._flooding:  # once per burst, not once per transfer
                self._flooding.add(friend)
                log.warning(
                    "friend %s sends more than %d mails at once; refusing the rest for now",
                    self._node.friend_label(friend),
                    MAX_INCOMING_PER_FRIEND,
                )
            self._refuse(
                friend, number, file_id, Reply(451, "4.3.2 too many mails arriving at once; try again")
            )
            return
        self._flooding.discard(friend)
        peer_key = self._node.friend_public_key(friend).hex()
        path = self._partial_dir / f"{peer_key}-{file_id.hex()}"
        earlier = self._partials.earlier(path)
        no_room = self._partials.admit(peer_key, path, size)
        if no_room is not None:
            log.warning(
                "%s: no room for a mail of %d bytes from friend %s (%s); refused for now",
                file_id.hex()[:12],
                size,
                self._node.friend_label(friend),
                no_room,
            )
            self._refuse(friend, number, file_id, Reply(452, f"4.3.1 {no_room}; try again later"))
            return
        inc = Incoming(friend, number, file_id, size, path, wire.PayloadParser(self._max_message))
        try:
            resume_at = inc.open(earlier)
            if resume_at:
                self._node.file_seek(friend, number, resume_at)
                log.info(
                    "%s: resuming a broken transfer at byte %d of %d", file_id.hex()[:12], resume_at, size
                )
            self._node.file_control(friend, number, FILE_CONTROL_RESUME)
        except (OSError, ToxError) as e:
            inc.close()
            self._partials.release(path)
            log.warning("%s: cannot take the transfer: %s", file_id.hex()[:12], e)
            self._refuse(
                friend, number, file_id, Reply(451, "4.3.0 the receiving bridge cannot store the mail now")
            )
            return
        self._incoming[(friend, number)] = inc

    def on_chunk(self, friend: int, number: int, position: int, data: bytes) -> None:
        inc = self._incoming.get((friend, number))
        if inc is None:
            return
        if not data:
            del self._incoming[(friend, number)]
            self._complete(inc)
            return
        if position != inc.received or position + len(data) > inc.size:
            self._drop(
                inc,
                Reply(451, "4.6.0 transfer arrived out of order or too long; try again"),
                "chunk out of order",
            )
            return
        assert inc.file is not None  # open from the accepted offer until completed or dropped
        try:
            inc.file.write(data)
            inc.take(data)
            inc.last_progress = time.monotonic()
        except wire.MessageTooBig as e:  # a header over the limit, or a zlib stream inflating beyond it
            self._drop(
                inc,
                Reply(552, f"5.3.4 message too big for this household (limit {self._max_message} bytes)"),
                str(e),
            )
        except wire.WireError as e:
            self._drop(inc, Reply(554, f"5.6.0 malformed toxbridge payload: {e}"), str(e))
        except OSError as e:
            self._drop(
                inc, Reply(451, "4.3.0 the receiving bridge cannot store the mail now"), f"write failed: {e}"
            )

    def on_control(self, friend: int, number: int, control: int) -> None:
        if control == FILE_CONTROL_CANCEL:
            inc = self._incoming.pop((friend, number), None)
            if inc is not None:
                inc.close()  # the partial file stays for a retry to resume
                self._partials.release(inc.path, inc)
                log.info(
                    "%s: friend %s stopped the transfer at byte %d; kept for a retry",
                    inc.file_id.hex()[:12],
                    self._node.friend_label(friend),
                    inc.received,
                )

    def drop_stalled(self, stall_timeout: float) -> None:
        """Give up transfers that made no progress for `stall_timeout` seconds; their partial
        files stay for the sender's retry to resume, and the friend's slot is free again."""
        now = time.monotonic()
        for key, inc in list(self._incoming.items()):
            if now - inc.last_progress > stall_timeout:
                del self._incoming[key]
                inc.close()
                self._partials.release(inc.path, inc)
                log.warning(
                    "%s: transfer from friend %s stalled at byte %d; cancelled, kept for a retry",
                    inc.file_id.hex()[:12],
                    self._node.friend_label(inc.friend),
                    inc.received,
                )
                self._cancel(inc.friend, inc.number)

    def on_friend_offline(self, friend: int) -> None:
        for key in [k for k in self._incoming if k[0] == friend]:
            inc = self._incoming.pop(key)
            inc.close()
            self._partials.release(inc.path, inc)

    def _drop(self, inc: Incoming, reply: Reply, why: str) -> None:
        """A transfer that cannot become a mail: answered, cancelled, its partial file removed."""
        log.warning("friend %s sent a broken mail transfer: %s", self._node.friend_label(inc.friend), why)
        del self._incoming[(inc.friend, inc.number)]
        inc.close()
        inc.path.unlink(missing_ok=True)
        self._partials.forget(inc.path)
        self._refuse(inc.friend, inc.number, inc.file_id, reply)

    def _refuse(self, friend: int, number: int, file_id: bytes, reply: Reply) -> None:
        self._answer(friend, file_id, reply)
        self._cancel(friend, number)

    def _complete(self, inc: Incoming) -> None:
        """All bytes are in the partial file: check them, then deliver from the file."""
        inc.close()
        if inc.received != inc.size or inc.hasher.digest() != inc.file_id:
            inc.path.unlink(missing_ok=True)
            self._partials.forget(inc.path)
            log.warning(
                "friend %s sent a mail whose length or hash does not match; asked to resend",
                self._node.friend_label(inc.friend),
            )
            self._answer(
                inc.friend,
                inc.file_id,
                Reply(451, "4.6.0 payload damaged in transit (hash mismatch); try again"),
            )
            return
        try:
            envelope = inc.parser.finish()
        except wire.WireError as e:
            inc.path.unlink(missing_ok=True)
            self._partials.forget(inc.path)
            log.warning("friend %s sent a malformed payload: %s", self._node.friend_label(inc.friend), e)
            self._answer(inc.friend, inc.file_id, Reply(554, f"5.6.0 malformed toxbridge payload: {e}"))
            return
        self._delivering.add(inc.file_id)
        task = asyncio.get_running_loop().create_task(self._deliver_and_answer(inc, envelope))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_and_answer(self, inc: Incoming, envelope: wire.Envelope) -> None:
        public_key = self._node.friend_public_key(inc.friend)
        peer_key = public_key.hex()
        spool, offset = inc.path, inc.parser.message_offset  # where the message is, in which file
        raw_id = inc.file_id  # the file_id this mail has when sent uncompressed
        guarding_raw = False  # whether this delivery holds raw_id in _delivering
        try:
            if envelope.encoding == wire.ZLIB:  # inflated into a file of its own, off the loop
                spool, offset = inc.path.with_name(inc.path.name + ".eml"), 0
                raw_head = wire.payload_head(envelope, "")
                raw_id = await asyncio.to_thread(
                    inflate_file, inc.path, inc.parser.message_offset, spool, raw_head
                )
                # The sender decides per attempt whether to compress (it may not have heard what
                # we can yet, after a restart): a mail that came raw before is the same mail.
                known = self._store.lookup(raw_id, self._mailbox)
                if known is not None or raw_id in self._delivering:
                    log.info(
                        "%s: repeat of a mail delivered before; answered from the record (%s)",
                        inc.file_id.hex()[:12],
                        known,
                    )
                    reply = known or Reply(451, "4.3.2 this mail is already arriving; try again later")
                    self._store.record(inc.file_id, self._mailbox, reply)
                    self._answer(inc.friend, inc.file_id, reply)
                    return
                self._delivering.add(raw_id)
                guarding_raw = True
            head = read_at(spool, offset, min(envelope.size, HEAD_LIMIT))
            header = headers.scan(head)  # the message's header fields; the rest stays in the file
            verdict = self._vet(public_key, envelope, header)
            if not verdict.ok:
                log.warning(
                    "%s: friend %s sent a mail with a sender it may not use: %s (%s)",
                    inc.file_id.hex()[:12],
                    peer_key[:8],
                    verdict.reason,
                    "rejected" if self._forged_sender == "reject" else "delivered with a warning",
                )
            if verdict.ok or self._forged_sender == "flag":
                new_head = trust_headers.stamp(
                    self._hostname,
                    self._address,
                    peer_key,
                    inc.file_id,
                    envelope.sender,
                    verdict.result,
                    verdict.reason,
                ) + trust_headers.strip(header, self._hostname)
                rest = header.end
                message = Spooled(new_head, spool, offset + rest, envelope.size - rest, inc.eight_bit)
                reply = await self._deliver(envelope.sender, message)
            else:
                reply = Reply(
                    550,
                    f"5.7.1 sender not allowed for your Tox key: {trust_headers.one_line(verdict.reason)}",
                )
            self._store.record(inc.file_id, self._mailbox, reply)  # durable before the answer leaves
            if raw_id != inc.file_id:
                self._store.record(raw_id, self._mailbox, reply)
        except OSError as e:
            log.warning("%s: cannot read the received mail back: %s", inc.file_id.hex()[:12], e)
            reply = Reply(451, "4.3.0 the receiving bridge cannot store the mail now")
        except Exception:
            log.exception("delivery to Dovecot failed unexpectedly")
            reply = Reply(451, "4.3.0 internal error in the receiving toxbridge; try again")
        finally:
            self._delivering.discard(inc.file_id)
            if guarding_raw:
                self._delivering.discard(raw_id)
            inc.path.unlink(missing_ok=True)
            spool.unlink(missing_ok=True)
            self._partials.forget(inc.path)
        status = "sent" if reply.code < 300 else "deferred" if reply.code < 500 else "bounced"
        log.info(
            "%s: to=<%s>, peer=%s, size=%d, wire=%d, delay=%.2f, status=%s (%s)",
            inc.file_id.hex()[:12],
            self._address,
            peer_key[:8],
            envelope.size,
            inc.size,
            time.monotonic() - inc.started,
            status,
            reply,
        )
        self._answer(inc.friend, inc.file_id, reply)

    def _answer(self, friend: int, file_id: bytes, reply: Reply, attempt: int = 0) -> None:
        try:
            self._node.send_lossless_packet(friend, wire.encode_result(file_id, [reply]))
        except ToxSendQueueFull:
            # Right after a big transfer the friend's packet queue can be full (seen in the
            # bench); the answer is small and worth a few more tries before the sender times out.
            if attempt < ANSWER_RETRIES:
                asyncio.get_running_loop().call_later(
                    ANSWER_RETRY_SECONDS * (attempt + 1), self._answer, friend, file_id, reply, attempt + 1
                )
                return
            log.warning(
                "could not answer friend %s (send queue full); the sender will retry",
                self._node.friend_label(friend),
            )
        except ToxError as e:
            # The sender sees no answer, tells its Postfix 4.4.1 and retries; the record answers then.
            log.warning(
                "could not answer friend %s (%s); the sender will retry", self._node.friend_label(friend), e
            )

    def _cancel(self, friend: int, number: int) -> None:
        try:
            self._node.file_control(friend, number, FILE_CONTROL_CANCEL)
        except ToxError:
            pass

    async def stop(self) -> None:
        """Let running deliveries finish (bounded by the LMTP client's own timeout)."""
        for inc in self._incoming.values():
            inc.close()
            self._partials.release(inc.path)
        if not self._tasks:
            return
        try:
            await asyncio.wait(self._tasks)
        except asyncio.CancelledError:  # the stop's deadline: no delivery outlives the store
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise
