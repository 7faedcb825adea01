"""`make deps` installs every Debian package that a role's apt task names or a test runs.

A long-lived machine hides a missing one (it did: the playbook needed python3-apt and
python3-nacl, a test systemd-analyze, and CI stayed green where earlier work had left them).
Inside the loopback-only namespace of `make test` apt cannot fetch what is missing, so the list
in the Makefile is the whole truth.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "ansible" / "roles"
# What the README states a fresh machine has; minbase's own packages (Essential or priority
# required) are there too.
PRECONDITIONS = {"python3", "python3.11", "python3-minimal", "python3.11-minimal", "make", "git"}
# Run only on request, and from PyPI, not Debian.
OPTIONAL = {"py-spy": "make bench BENCH_ARGS='--profile DIR'"}
# Calls whose first argument is a command line.
RUNNERS = {"run", "Popen", "check_call", "check_output", "call", "run_daemon_start", "run_stderr_tty"}
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def apt_packages() -> set[str]:
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO), "apt-packages"], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def _role_vars(role: Path) -> dict:
    merged: dict = {}
    for folder in ("defaults", "vars"):
        path = role / folder / "main.yml"
        if path.exists():
            merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def role_apt_packages() -> dict[str, str]:
    """Package → the role that installs it, from every apt task's `name`."""
    found: dict[str, str] = {}
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        variables = _role_vars(role)
        for tasks in sorted((role / "tasks").glob("*.yml")):
            for task in yaml.safe_load(tasks.read_text()) or []:
                module = task.get("ansible.builtin.apt") or task.get("apt")
                if not isinstance(module, dict) or "name" not in module:
                    continue
                names = module["name"]
                template = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", names) if isinstance(names, str) else None
                if template:
                    names = variables[template.group(1)]
                for name in [names] if isinstance(names, str) else names:
                    found[name] = role.name
    return found


def programs_run() -> dict[str, str]:
    """Program → where it is run: the first word of every literal command line in the tests,
    the lab and the bench, and every shutil.which("…") there."""
    found: dict[str, str] = {}
    sources = [
        *(REPO / "tests").glob("*.py"),
        *(REPO / "toxbridge" / "lab").glob("*.py"),
        *(REPO / "bench").glob("*.py"),
    ]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            first = node.args[0]
            if name in RUNNERS and isinstance(first, (ast.List, ast.Tuple)) and first.elts:
                first = first.elts[0]
            elif name != "which":
                continue
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, f"{source.relative_to(REPO)}:{node.lineno}")
    return found


def package_of(program: str) -> str | None:
    """The Debian package that ships the program; None for one outside Debian's files (a venv)."""
    path = shutil.which(program, path=SEARCH_PATH)
    if path is None:
        raise AssertionError(f"{program} is not installed")
    real = os.path.realpath(path)
    if not real.startswith(("/usr/", "/bin/", "/sbin/")) or real.startswith("/usr/local/"):
        return None
    candidates = {path, real, re.sub(r"^/usr", "", path), re.sub(r"^/usr", "", real)}
    for candidate in candidates:
        done = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.split(":")[0].split(",")[0].strip()
    raise AssertionError(f"{program} ({real}) belongs to no Debian package")


def in_minbase(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Essential} ${Priority}", package], capture_output=True, text=True
    )
    fields = done.stdout.split()  # Essential is "yes" or empty
    return "yes" in fields or "required" in fields


def test_every_role_package_is_in_make_deps():
    wanted = role_apt_packages()
    assert {"postfix", "toxcore-utils", "python3-nacl"} <= wanted.keys()  # the scan sees the tasks
    missing = {p: role for p, role in wanted.items() if p not in apt_packages()}
    assert not missing, f"add to APT_PACKAGES in the Makefile: {missing}"


def test_every_program_the_tests_run_is_installed_by_make_deps():
    programs = programs_run()
    assert {"postfix", "systemd-analyze", "ansible-playbook"} <= programs.keys()  # the scan sees the calls
    listed = apt_packages() | PRECONDITIONS
    missing = {}
    for program, where in sorted(programs.items()):
        if program in OPTIONAL:
            continue
        package = package_of(program)
        if package is not None and package not in listed and not in_minbase(package):
            missing[program] = f"{package} (run at {where})"
    assert not missing, f"add to APT_PACKAGES in the Makefile: {missing}"


# --- Python dependencies (issue 15 point 16) ------------------------------------------------

LOCK = REPO / "deploy" / "requirements.lock"
IMPORT_NAMES = {
    "aiosmtpd": "aiosmtpd",
    "pyyaml": "yaml",
    "qrcode": "qrcode",
    "pypng": "png",
    "kilter.protocol": "kilter",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def locked() -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes)."""
    entries = {}
    for entry in re.split(r"\n(?=[A-Za-z])", re.sub(r"(?m)^#.*\n", "", LOCK.read_text()).strip()):
        pinned = re.match(r"([\w.-]+)==([\w.]+)", entry)
        assert pinned is not None, entry
        name, version = pinned.groups()
        entries[name.lower()] = (version, re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return entries


def test_every_declared_dependency_is_used_and_locked_with_hashes():
    lock = locked()
    imported = set()
    for source in (REPO / "toxbridge").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    for requirement in declared():
        name = _name(requirement)
        assert IMPORT_NAMES.get(name, name) in imported, f"{name} is declared but never imported"
        assert name in lock, f"{name} is missing from {LOCK.name}"
    assert all(hashes for _, hashes in lock.values()), lock


def test_the_tests_run_the_locked_versions():
    """What every Pi installs is what `make test` tests (make venv installs the lock first)."""
    for name, (version, _) in locked().items():
        assert importlib.metadata.version(name) == version, name


def test_aiosmtpd_is_pinned_to_the_version_whose_internals_lmtp_in_overrides():
    from aiosmtpd.smtp import SMTP

    (pin,) = [r for r in declared() if _name(r) == "aiosmtpd"]
    assert pin == f"aiosmtpd=={locked()['aiosmtpd'][0]}"
    for internal in ("_getparams", "_set_post_data_state", "_call_handler_hook"):
        assert callable(getattr(SMTP, internal, None)), internal
