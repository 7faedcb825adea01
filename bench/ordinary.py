"""What the milter costs a submission (issue 16): one household whose users send to the outside
world (a second Postfix with its own Dovecot), as Thunderbird sends (submission, STARTTLS,
login), one mail per session. Three ways, interleaved mail by mail so drift hits all alike:

- notify: the milter runs and writes a notice into the sender's INBOX before Postfix's 250;
- allow:  the milter runs and lets the mail go (ordinary_mail: allow for that user);
- none:   a submission service of the same Postfix without smtpd_milters.

Prints the median seconds from connect to the 250 after DATA and the ratios notify/none and
allow/none. Run inside the loopback-only namespace:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m bench.ordinary [MAILS]'
"""

from __future__ import annotations

import shutil
import smtplib
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from toxbridge.lab.bootstrapd import BootstrapNode
from toxbridge.lab.dovecot import Dovecot
from toxbridge.lab.household import Household
from toxbridge.lab.ports import free_port
from toxbridge.lab.postfix import Postfix

MESSAGE = (
    b"From: {sender}\r\nTo: carl@world.test\r\nSubject: bench\r\nMessage-ID: <{n}@bench>\r\n\r\n"
    + b"x" * 10_000
    + b"\r\n"
)


def submit(port: int, login: str, password: str, sender: str, n: int) -> float:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.starttls(context=context)
        smtp.login(login, password)
        smtp.sendmail(
            sender,
            ["carl@world.test"],
            MESSAGE.replace(b"{sender}", sender.encode()).replace(b"{n}", b"%d" % n),
        )
    return time.perf_counter() - t0


def main(mails: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="toxbridge-bench-ordinary-", dir="/tmp"))
    root.chmod(0o755)
    node = BootstrapNode(root / "bootstrapd", free_port(), free_port())
    world_dovecot = Dovecot(root, "world", {"carl": "carl-pw"}, free_port(), free_port(), free_port())
    world = Postfix(
        root, "world", "world.test", free_port(), ["carl"], world_dovecot.lmtp_port, free_port(),
        {"transport_maps": "regexp:$config_directory/transport.regexp"},
    )  # fmt: skip
    parts: list = []
    try:
        for part in (node, world_dovecot, world):
            part.start()
            parts.append(part)
        assert node.public_key is not None  # start() read it
        home = Household(
            root,
            "nora",
            {"nora": "nora-pw", "ned": "ned-pw"},
            [(node.host, node.port, node.public_key)],
            submission=True,
            postfix_extra={"default_transport": f"smtp:[127.0.0.1]:{world.smtp_port}"},
            bridge_settings={
                "users": [
                    {"mailbox": "nora", "address": "nora@nora.test"},
                    {"mailbox": "ned", "address": "ned@nora.test", "ordinary_mail": "allow"},
                ]
            },
        )
        home.start()
        parts.append(home)
        # A second submission service without the milter, for the baseline.
        plain = free_port()
        master = (home.postfix.config_dir / "master.cf").read_text()
        block = master[master.index(f"127.0.0.1:{home.postfix.submission_port} inet") :].split("\n\n", 1)[0]
        extra = block.replace(f"127.0.0.1:{home.postfix.submission_port}", f"127.0.0.1:{plain}")
        extra = "\n".join(line for line in extra.splitlines() if "smtpd_milters" not in line)
        (home.postfix.config_dir / "master.cf").write_text(master + "\n" + extra + "\n")
        home.postfix.reload()
        port = home.postfix.submission_port
        assert port is not None
        ways = {
            "notify": lambda n: submit(port, "nora", "nora-pw", "nora@nora.test", n),
            "allow": lambda n: submit(port, "ned", "ned-pw", "ned@nora.test", n),
            "none": lambda n: submit(plain, "nora", "nora-pw", "nora@nora.test", n),
        }
        times: dict[str, list[float]] = {w: [] for w in ways}
        for n in range(mails + 3):
            for way, send in ways.items():
                took = send(n * 10 + len(times[way]))
                if n >= 3:  # warm-up: the first sessions start smtpd processes
                    times[way].append(took)
        median = {w: statistics.median(t) for w, t in times.items()}
        notices = sum(1 for m in home.dovecot.fetch_inbox("nora") if b"Auto-Submitted: auto-generated" in m)
        print(f"{mails} mails each way (10 KB, one session each), median connect -> 250 after DATA:")
        for way in ways:
            print(f"  {way:7s} {median[way] * 1000:7.1f} ms")
        print(
            f"  notify/none {median['notify'] / median['none']:.2f}, allow/none {median['allow'] / median['none']:.2f}"
        )
        print(f"  notices in nora's INBOX: {notices} (expected {mails + 3})")
    finally:
        for part in reversed(parts):
            part.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
