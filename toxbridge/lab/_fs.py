"""Shared helpers for the lab: directories, system users, logs, deploy files."""

from __future__ import annotations

import fcntl
import os
import pwd
import subprocess
from pathlib import Path

USERADD_EXISTS = 9  # useradd(8): the user name is already in use


def deploy_dir() -> Path:
    """The repository's deploy/ folder: the files an admin copies are the files the lab runs."""
    env = os.environ.get("TOXBRIDGE_DEPLOY_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "deploy"


def prepare_root(root: Path) -> Path:
    """Create `root` with mode 0755 and check that every parent is world-traversable.

    Postfix and Dovecot drop privileges (postfix, vmail, dovenull) and then
    cannot reach a directory under a 0700 parent such as pytest's tmp_path.
    Callers should use e.g. ``tempfile.mkdtemp(dir="/tmp")``.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for parent in root.parents:
        if not os.stat(parent).st_mode & 0o001:
            raise PermissionError(
                f"{parent} is not world-traversable (mode {oct(os.stat(parent).st_mode & 0o777)}); "
                f"servers running as unprivileged users cannot reach {root}. "
                "Use tempfile.mkdtemp(dir='/tmp') for lab roots."
            )
    return root


USERS_LOCK = "/tmp/toxbridge-lab-users.lock"


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """Create a system user and group `name` (no home, no shell) if missing.

    Safe when several households start at once, in threads or in processes: the check and the
    creation happen under one flock (each open() holds its own), and a user that someone else
    created first (useradd's exit 9) is taken as it is.
    """
    with open(USERS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        done = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode not in (0, USERADD_EXISTS):
            raise RuntimeError(f"useradd {name} failed (exit {done.returncode}): {done.stderr.strip()}")
        return pwd.getpwnam(name)


def process_alive(pid: int) -> bool:
    """True while the process runs. A zombie (exited, not yet reaped: this machine's PID 1 may
    never reap the daemons that reparent to it) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def read_pid(path: Path) -> int | None:
    """The pid a daemon wrote to its pid file, or None."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_exit(pid: int | None, timeout: float, what: str) -> None:
    """Wait until the daemon `pid` (read before asking it to stop) is gone."""
    from .ports import wait_until

    if pid is not None and not wait_until(lambda: not process_alive(pid), timeout):
        raise RuntimeError(f"{what} (pid {pid}) still running after stop")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<no log at {path}: {e}>"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a short command; never a forking daemon (its pipes would keep us waiting)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    return subprocess.run(cmd, **kw)


def run_daemon_start(cmd: list[str], log: Path, timeout: float = 60, env: dict | None = None) -> int:
    """Run a command that starts a forking daemon, output appended to `log`.

    A daemon that inherits a pipe keeps it open and subprocess would wait for
    EOF forever; a file has no such problem.
    """
    with open(log, "ab") as out:
        return subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=timeout, env=env
        ).returncode


def run_stderr_tty(cmd: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run a short, non-daemon command with stderr on a pseudo-terminal.

    Postfix commands print errors to stderr only when it is a terminal;
    otherwise they go to syslog, and there is no syslog here.
    """
    import pty
    import select

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        slave = -1
        chunks = []
        deadline = timeout
        while True:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    data = b""
                if data:
                    chunks.append(data)
                    continue
            if p.poll() is not None and not r:
                break
            deadline -= 0.1
            if deadline <= 0:
                p.kill()
                raise subprocess.TimeoutExpired(cmd, timeout)
            if r and not data:
                p.wait(timeout=max(deadline, 1))
                break
        return p.wait(), b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
