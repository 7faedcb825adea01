"""Files a friend on a plain Tox chat app sends (a photo from aTox, `/sendfile` in toxic), as
attachments of that friend's chat mail.

An offer up to max_message_size is accepted and written to a partial file under the same caps
(Partials) as mail from bridges: a chat friend cannot fill the disk with offers either. A
completed file is synced and moved into the state directory's `chat-files/MAILBOX/` before
it joins the friend's open burst (ChatStore): a kill -9 before that leaves only a partial file
(the caps prune it, or the same offer resumes from it), never half a file in a mail. A file too
big, or one that does not fit the room left in the open burst's mail, is refused with a chat
line that says why and the limit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..files import fsync_directory
from ..mail.chat_mail import attachment_name
from . import wire
from .errors import ToxError
from .library import FILE_CONTROL_CANCEL, FILE_CONTROL_RESUME
from .node import ToxNode
from .partial import Incoming, Partials

log = logging.getLogger("toxbridge.chat")

# (friend's key, Tox name, file name, the completed file) -> the file is in the open burst
FileDone = Callable[[bytes, str, str, Path], None]
RoomUsed = Callable[[bytes], int]  # friend's key -> bytes of files in the open burst
DayLeft = Callable[[bytes], int]  # friend's key -> bytes of files it may still send today


class IncomingFile(Incoming):
    """A chat app's file: raw bytes, no toxbridge envelope to parse."""

    def take(self, data: bytes) -> None:
        self.hasher.update(data)
        self.received += len(data)


class ChatFiles:
    """Files arriving from one identity's chat friends."""

    def __init__(
        self,
        node: ToxNode,
        mailbox: str,
        max_size: int,
        partial_dir: Path,
        files_dir: Path,
        partials: Partials,
        done: FileDone,
        room_used: RoomUsed,
        day_left: DayLeft,
        names: Callable[[bytes], str],
    ) -> None:
        self._node, self._mailbox, self._max_size = node, mailbox, max_size
        self._partial_dir, self._files_dir, self._partials = partial_dir, files_dir, partials
        self._done, self._room_used, self._day_left, self._names = done, room_used, day_left, names
        self._incoming: dict[tuple[int, int], tuple[IncomingFile, str]] = {}  # → (transfer, file name)

    def offer(self, friend: int, number: int, size: int, filename: bytes) -> None:
        public_key = self._node.friend_public_key(friend)
        label = self._node.friend_label(friend)
        name = attachment_name(filename)
        if size > self._max_size:
            log.info(
                "%s: chat friend %s offered a file of %d bytes, over the limit; refused",
                self._mailbox,
                label,
                size,
            )
            self._refuse(
                friend,
                number,
                f'(The file "{name}" is too big for e-mail: the limit is {_mib(self._max_size)}. It was not delivered.)',
            )
            return
        arriving = sum(i.size for i, _ in self._incoming.values() if i.friend == friend)
        if self._room_used(public_key) + arriving + size > self._max_size:
            log.info(
                "%s: chat friend %s offered a file that does not fit the open chat mail; refused",
                self._mailbox,
                label,
            )
            self._refuse(
                friend,
                number,
                f'(The file "{name}" does not fit in the e-mail of this conversation (at most '
                f"{_mib(self._max_size)} of files per mail). Send it again in a few minutes.)",
            )
            return
        if arriving + size > self._day_left(public_key):
            log.info("%s: chat friend %s reached today's limit for files; refused", self._mailbox, label)
            self._refuse(
                friend,
                number,
                f'(The file "{name}" was not delivered: you have sent all the files this mailbox '
                f"takes from you today. Send it again tomorrow (UTC).)",
            )
            return
        peer_key = public_key.hex()
        path = self._partial_dir / f"{peer_key}-{self._node.file_id(friend, number).hex()}"
        earlier = self._partials.earlier(path)
        no_room = self._partials.admit(peer_key, path, size)
        if no_room is not None:
            log.warning(
                "%s: no room for a file of %d bytes from chat friend %s (%s); refused",
                self._mailbox,
                size,
                label,
                no_room,
            )
            self._refuse(
                friend, number, f'(The file "{name}" cannot be taken now: {no_room}. Try again later.)'
            )
            return
        inc = IncomingFile(friend, number, b"", size, path, wire.PayloadParser(self._max_size))
        try:
            resume_at = inc.open(earlier if isinstance(earlier, IncomingFile) else None)
            if resume_at:
                self._node.file_seek(friend, number, resume_at)
            self._node.file_control(friend, number, FILE_CONTROL_RESUME)
        except (OSError, ToxError) as e:
            inc.close()
            self._partials.release(path)
            log.warning("%s: cannot take the file of chat friend %s: %s", self._mailbox, label, e)
            self._refuse(friend, number, f'(The file "{name}" cannot be stored now. Try again later.)')
            return
        log.info(
            "%s: chat friend %s sends a file of %d bytes%s",
            self._mailbox,
            label,
            size,
            f", resumed at byte {resume_at}" if resume_at else "",
        )
        self._incoming[(friend, number)] = (inc, name)

    def arriving(self, public_key: bytes) -> bool:
        """Whether a file from this friend is on its way now."""
        return any(
            self._node.friend_public_key(inc.friend) == public_key for inc, _ in self._incoming.values()
        )

    def on_chunk(self, friend: int, number: int, position: int, data: bytes) -> None:
        entry = self._incoming.get((friend, number))
        if entry is None:
            return
        inc, name = entry
        if not data:
            del self._incoming[(friend, number)]
            self._complete(inc, name)
            return
        if position != inc.received or position + len(data) > inc.size:
            self._stop(inc, "arrived out of order or too long")
            self._cancel(friend, number)
            return
        assert inc.file is not None  # open from the accepted offer until completed or stopped
        try:
            inc.file.write(data)
            inc.take(data)
            inc.last_progress = time.monotonic()
        except OSError as e:
            self._stop(inc, f"cannot be written: {e}")
            self._refuse(friend, number, f'(The file "{name}" cannot be stored now. Try again later.)')

    def on_control(self, friend: int, number: int, control: int) -> None:
        if control == FILE_CONTROL_CANCEL and (friend, number) in self._incoming:
            inc, _ = self._incoming.pop((friend, number))
            inc.close()  # the partial file stays: the same offer again resumes from it
            self._partials.release(inc.path, inc)
            log.info(
                "%s: chat friend %s stopped sending a file at byte %d",
                self._mailbox,
                self._node.friend_label(friend),
                inc.received,
            )

    def on_friend_offline(self, friend: int) -> None:
        for key in [k for k in self._incoming if k[0] == friend]:
            inc, _ = self._incoming.pop(key)
            inc.close()
            self._partials.release(inc.path, inc)

    def drop_stalled(self, stall_timeout: float) -> None:
        now = time.monotonic()
        for key, (inc, _) in list(self._incoming.items()):
            if now - inc.last_progress > stall_timeout:
                del self._incoming[key]
                inc.close()
                self._partials.release(inc.path, inc)
                self._cancel(inc.friend, inc.number)

    def stop(self) -> None:
        for inc, _ in self._incoming.values():
            inc.close()
            self._partials.release(inc.path)
        self._incoming.clear()

    def _complete(self, inc: IncomingFile, name: str) -> None:
        """On disk first (synced, moved out of the partial files), then in the burst."""
        inc.close()
        public_key = self._node.friend_public_key(inc.friend)
        if inc.received != inc.size:
            self._stop(inc, f"ended at byte {inc.received} of {inc.size}")
            return
        target = self._files_dir / f"{inc.path.name}-{time.time_ns()}"
        try:
            with open(inc.path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(inc.path, target)
            fsync_directory(self._files_dir)
        except OSError as e:
            self._stop(inc, f"cannot be kept: {e}")
            return
        self._partials.forget(inc.path)
        self._done(public_key, self._names(public_key), name, target)
        log.info(
            "%s: chat friend %s sent a file of %d bytes; it goes with their chat mail",
            self._mailbox,
            self._node.friend_label(inc.friend),
            inc.size,
        )

    def _stop(self, inc: IncomingFile, why: str) -> None:
        log.warning(
            "%s: a file from chat friend %s %s; dropped",
            self._mailbox,
            self._node.friend_label(inc.friend),
            why,
        )
        self._incoming.pop((inc.friend, inc.number), None)
        inc.close()
        inc.path.unlink(missing_ok=True)
        self._partials.forget(inc.path)

    def _refuse(self, friend: int, number: int, text: str) -> None:
        """Cancel the offer and tell the chat user why (their app only shows "cancelled")."""
        self._cancel(friend, number)
        try:
            self._node.send_message(friend, text.encode())
        except ToxError as e:
            log.debug(
                "%s: could not tell chat friend %s: %s", self._mailbox, self._node.friend_label(friend), e
            )

    def _cancel(self, friend: int, number: int) -> None:
        try:
            self._node.file_control(friend, number, FILE_CONTROL_CANCEL)
        except ToxError:
            pass


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB" if size >= 1 << 20 else f"{size} bytes"
