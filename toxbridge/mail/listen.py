"""The sockets the bridge listens on for Postfix (LMTP, the socketmap, the milter), made one way.

Whoever can talk LMTP to the bridge sends Tox mail as any household user (the bridge checks only
that the envelope sender is one), so the default is a unix socket that only Postfix can open: mode
0660, group of its directory. That directory, /var/spool/postfix/toxbridge, is owned by the
bridge's user with group postfix and mode 2750 (set-group-id: a socket made in it takes the
group postfix even though the bridge is not a member). It lies in Postfix's queue directory
because trivial-rewrite, which asks the socketmap, runs chrooted there on Debian. A TCP port on
loopback stays possible (host:port), but every process on the host can reach it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..config import Endpoint

# Postfix's lmtp client and trivial-rewrite run as the user postfix, a member of the socket's group.
SOCKET_MODE = 0o660


class ListenError(OSError):
    """The socket cannot be made as it must be; the text says how to fix it."""


class StartupError(RuntimeError):
    """A toxbridge process cannot start; the text says what and the likely fix."""


Server = TypeVar("Server")


async def start_listener(key: str, listen: object, start: Callable[[], Awaitable[Server]]) -> Server:
    """start(), with a failure to listen turned into a StartupError that names the setting."""
    try:
        return await start()
    except ListenError as e:
        raise StartupError(f"cannot listen for Postfix on {listen} ({key}): {e.strerror}") from None
    except OSError as e:
        raise StartupError(
            f"cannot listen for Postfix on {listen} ({key}): {e.strerror} "
            f"(another toxbridge running? change {key})"
        ) from None


def unix_socket(path: str) -> socket.socket:
    """A unix stream socket bound at `path`, mode 0660 and the directory's group, not yet
    listening: asyncio's create_unix_server(sock=...) calls listen() after this, so no client can
    connect before the mode and group are right."""
    directory = os.path.dirname(path) or "."
    try:
        dir_stat = os.stat(directory)
    except FileNotFoundError:
        raise ListenError(
            errno.ENOENT,
            f"directory {directory} does not exist; create it for the bridge's user with Postfix's "
            f"group: install -d -o toxbridge -g postfix -m 2750 {directory}",
        ) from None
    try:  # A socket left by an earlier run would make bind fail; anything else is not ours.
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, SOCKET_MODE)
        if os.stat(path).st_gid != dir_stat.st_gid:
            # Without set-group-id on the directory the socket has the bridge's own group.
            try:
                os.chown(path, -1, dir_stat.st_gid)
            except PermissionError:
                raise ListenError(
                    errno.EPERM,
                    f"{path} would not belong to the group of {directory}, so Postfix could not "
                    f"connect: make the directory set-group-id (chmod g+s {directory})",
                ) from None
    except BaseException:
        sock.close()
        raise
    return sock


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Connections:
    """A listener for Postfix on an Endpoint (a unix socket made by unix_socket, or host:port)
    that knows its open connections, each by the task that serves it and its writer: the
    socketmap ends them on close, the milter lets them finish."""

    def __init__(self, serve: Serve, what: str) -> None:
        self._serve, self._what = serve, what
        self._server: asyncio.Server | None = None
        self.open: dict[asyncio.Task, asyncio.StreamWriter] = {}

    async def listen(self, endpoint: Endpoint) -> None:
        if endpoint.path:
            self._server = await asyncio.start_unix_server(self._handle, sock=unix_socket(endpoint.path))
        else:
            self._server = await asyncio.start_server(self._handle, endpoint.host, endpoint.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a handler always runs in a task
        self.open[task] = writer
        try:
            await self._serve(reader, writer)
        finally:
            del self.open[task]

    @property
    def server(self) -> asyncio.Server:
        if self._server is None:
            raise RuntimeError(f"the {self._what} server is not listening yet")
        return self._server


async def close_connection(writer: asyncio.StreamWriter) -> None:
    """End a Postfix client's connection; one that is gone already is no error."""
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass
