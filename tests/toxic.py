"""The real `toxic` chat client (Debian's ncurses Tox client), run headless in tmux, for tests.

A friend who uses a plain chat app and no bridge: toxic on its own tmux server (a private socket,
so nothing touches another tmux), bootstrapped only from the lab's tox-bootstrapd (a nodes file
with that one node, nodeslist_update_freq = 0, `-4 -L`: IPv4, no LAN discovery). Its profile
is made here with our own binding (an unencrypted Tox savedata), so toxic asks nothing at start
and the test knows its Tox ID before it runs. The screen is read with `tmux capture-pane`, the
chats from toxic's own chat logs (autolog); keys are typed with `tmux send-keys`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from toxbridge.lab.ports import wait_until
from toxbridge.tox.node import ToxNode
from toxbridge.tox.options import ToxOptions

COLUMNS, LINES = 200, 50


class Toxic:
    def __init__(self, root: Path, bootstrap, name: str = "toxic-friend") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.profile = self.root / "profile.tox"
        self.logs = self.root / "chatlogs"
        self.downloads = self.root / "downloads"
        self.logs.mkdir(exist_ok=True)
        self.downloads.mkdir(exist_ok=True)
        self.socket = self.root / "tmux.sock"
        node = ToxNode(ToxOptions(udp=True, local_discovery=False, ipv6=False), name=name)
        try:
            self.tox_id = node.address.hex().upper()
            self.public_key = node.public_key
            self.profile.write_bytes(node.savedata())
        finally:
            node.close()
        (self.root / "nodes.json").write_text(
            json.dumps(
                {
                    "last_scan": int(time.time()),
                    "last_refresh": int(time.time()),
                    "nodes": [
                        {
                            "ipv4": bootstrap.host,
                            "ipv6": "-",
                            "port": bootstrap.port,
                            "tcp_ports": [bootstrap.tcp_port],
                            "public_key": bootstrap.public_key.hex().upper(),
                            "maintainer": "lab",
                            "location": "LO",
                            "status_udp": True,
                            "status_tcp": True,
                            "version": "2018",
                            "motd": "lab node",
                            "last_ping": int(time.time()),
                        }
                    ],
                },
                separators=(",", ":"),  # toxic finds the keys as `"ipv4":"` by plain string search
            )
        )
        # libconfig syntax; only what the test needs differs from toxic's defaults.
        (self.root / "toxic.conf").write_text(
            "ui = {\n"
            "  autolog = true;\n"
            "  nodeslist_update_freq = 0;\n"
            "  autosave_freq = 0;\n"
            "  native_colors = true;\n"
            "  show_typing_self = false;\n"
            "  show_typing_other = false;\n"
            "};\n"
            "tox = {\n"
            f'  download_path = "{self.downloads}/";\n'
            f'  chatlogs_path = "{self.logs}/";\n'
            "};\n"
        )

    # ---- the process

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, check=check, timeout=10
        )

    def start(self) -> None:
        program = shutil.which("toxic")  # Debian's toxic (make deps installs it)
        if program is None:
            raise RuntimeError("toxic is not installed (make deps)")
        command = (
            f"exec {program} -4 -L -f {self.profile} -n {self.root / 'nodes.json'} -c {self.root / 'toxic.conf'}"
            f" 2>>{self.root / 'stderr.log'}"
        )
        self._tmux(
            "new-session", "-d", "-s", "toxic", "-x", str(COLUMNS), "-y", str(LINES),
            "-e", f"HOME={self.root}", "sh", "-c", command,
        )  # fmt: skip
        if not wait_until(lambda: "Welcome" in self.screen() or "Tox ID" in self.screen(), 20):
            raise RuntimeError(f"toxic did not start:\n{self.screen()}")

    @property
    def running(self) -> bool:
        return self._tmux("has-session", "-t", "toxic", check=False).returncode == 0

    def stop(self) -> None:
        """Quit toxic the way a user does (/exit: a clean tox_kill, friends see it go at once)."""
        if not self.running:
            return
        self.command("/exit")
        if not wait_until(lambda: not self.running, 10):
            self._tmux("kill-server", check=False)

    def close(self) -> None:
        self.stop()
        self._tmux("kill-server", check=False)

    # ---- the screen and the keyboard

    def screen(self) -> str:
        done = self._tmux("capture-pane", "-p", "-t", "toxic", check=False)
        return done.stdout if done.returncode == 0 else ""

    def keys(self, *keys: str) -> None:
        """tmux key names (Enter, C-o, PPage, …)."""
        self._tmux("send-keys", "-t", "toxic", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "toxic", "-l", text)

    def command(self, line: str) -> None:
        """A line typed into the current window and sent (a message, or a /command)."""
        self.type(line)
        self.keys("Enter")

    def wait_screen(self, pattern: str, timeout: float = 30) -> str:
        if not wait_until(lambda: re.search(pattern, self.screen()) is not None, timeout, interval=0.2):
            raise TimeoutError(f"toxic: no /{pattern}/ on the screen within {timeout}s:\n{self.screen()}")
        return self.screen()

    # ---- what toxic logged

    def chatlog(self) -> str:
        """Every chat log toxic wrote (one file per friend), one after the other. toxic flushes
        a log only when it writes to it again a second or more after its last flush: the
        newest lines may still be in its buffer (seen() also reads the screen)."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*")) if p.is_file())

    def seen(self) -> str:
        """What toxic has shown or logged: its chat logs, then the screen."""
        return self.chatlog() + "\n" + self.screen()

    def wait_seen(self, pattern: str, timeout: float = 30) -> str:
        if not wait_until(lambda: re.search(pattern, self.seen()) is not None, timeout, interval=0.2):
            raise TimeoutError(
                f"toxic: no /{pattern}/ in its logs or on screen within {timeout}s:\n{self.seen()}"
            )
        return self.seen()

    # ---- what a user does

    def add_friend(self, tox_id: str, text: str = "hello") -> None:
        self.command(f'/add {tox_id} "{text}"')  # toxic wants the text in quotes

    def accept_request(self) -> None:
        """Accept the first friend request toxic shows (typed in its home window)."""
        self.wait_screen(r"Friend request", 90)
        self.command("/accept 0")

    def in_chat(self) -> bool:
        """A chat window is in front: its title line ends with the friend's key prefix, {ABCDEF}."""
        title = self.screen().split("\n", 1)[0]
        return re.search(r"\{[0-9A-F]{6}\}\s*$", title) is not None

    def open_chat(self) -> None:
        """Bring the first friend's chat window to the front (toxic opens one when a friend comes
        online): Ctrl-O steps through the windows until a chat window is shown."""
        for _ in range(5):
            if self.in_chat():
                return
            self.keys("C-o")
            wait_until(self.in_chat, 2, interval=0.1)
        raise RuntimeError(f"toxic: no chat window:\n{self.screen()}")
