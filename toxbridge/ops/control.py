"""The running bridge's control socket: `toxbridge status` asks it what only the daemon knows.

A unix socket in the state directory (mode 0600: the service user and root). One request per
connection: the client sends a command line, the daemon answers one JSON document and closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("toxbridge.control")

SOCKET_NAME = "control.sock"
MAX_REQUEST = 256


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


async def start_server(path: Path, commands: dict[str, Callable[[], dict]]) -> asyncio.AbstractServer:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            handler = commands.get(line[:MAX_REQUEST].decode("ascii", "replace").strip())
            answer = handler() if handler else {"error": f"unknown command; known: {', '.join(commands)}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        except Exception:  # a bug in a snapshot must not take the daemon down
            log.exception("control request failed")
        finally:
            writer.close()

    path.unlink(
        missing_ok=True
    )  # left by a killed daemon (a second daemon never gets here: its LMTP port is taken)
    old_umask = os.umask(0o177)
    try:
        return await asyncio.start_unix_server(serve, path)
    finally:
        os.umask(old_umask)


def query(path: Path, command: str, timeout: float = 5.0) -> dict | None:
    """Blocking: the daemon's answer, or None when no daemon answers at `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(command.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    try:
        answer = json.loads(data)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
