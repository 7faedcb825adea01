"""When a friend comes online, ask Postfix to deliver the mail it deferred for that friend now,
not after its backoff (up to maximal_backoff_time, 4000 s by default): `postqueue -j` finds the
mail, `postqueue -i` pushes it (mail/postqueue.py)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time

from ..config import Config, User
from ..contacts.routes import Routes
from ..mail import postqueue
from .errors import ToxError
from .node import ToxNode

log = logging.getLogger("toxbridge.identity")  # the identity's log lines, as before it was split

# qmgr keeps a failed address lookup (the bridge's socketmap was down) for its last
# sender/recipient pair about 30 s (measured, tests/test_socketmap.py): mail pushed within that
# window is deferred again. A second push after it catches that mail.
SECOND_PUSH_SECONDS = 35.0


class CatchUp:
    """One identity's pushes of its user's deferred mail, per friend."""

    def __init__(self, config: Config, user: User, node: ToxNode, routes: Routes) -> None:
        self.config, self.user, self.node, self.routes = config, user, node, routes
        self._tasks: set[asyncio.Task] = set()
        self._pushing: set[bytes] = set()

    def now(self, public_key: bytes) -> None:
        """Push the friend's deferred mail now."""
        self._spawn(self._push(public_key))

    def now_and_again(self, friend: int, public_key: bytes) -> None:
        """Push now, and once more after SECOND_PUSH_SECONDS while the friend stays online."""
        self.now(public_key)
        self._spawn(self._push_again(friend, public_key))

    async def _push_again(self, friend: int, public_key: bytes) -> None:
        await asyncio.sleep(SECOND_PUSH_SECONDS)
        try:
            if self.node.friend_connection(friend) != 0 and self.node.friend_public_key(friend) == public_key:
                await self._push(public_key)
        except ToxError:  # the friend was removed meanwhile
            pass

    async def _push(self, public_key: bytes) -> None:
        if public_key in self._pushing:  # connection-up and greeting both ask, ms apart
            return
        self._pushing.add(public_key)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            queue = await loop.run_in_executor(None, postqueue.list_queue, self.config.postfix)
            wanted = postqueue.deferred_for(
                queue, self.user.address, self.routes.recipient_matcher(self.user.mailbox, public_key)
            )
            pushed = await loop.run_in_executor(None, postqueue.push, self.config.postfix, wanted)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning(
                "%s: cannot reach Postfix's queue to push mail for %s: %s (check postfix.config_dir "
                "and postfix.postqueue)",
                self.user.mailbox,
                public_key.hex()[:8],
                e,
            )
            return
        finally:
            self._pushing.discard(public_key)
        if pushed:
            log.info(
                "%s: friend %s online: pushed %d deferred mail(s) in %.2f s: %s",
                self.user.mailbox,
                public_key.hex()[:8],
                len(pushed),
                time.monotonic() - started,
                " ".join(pushed),
            )

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
