"""The bench against ordinary e-mail, on the lab internet (toxbridge/lab/internet.py).

Two households, src (ann) and dst (ben, and mailbox `direct`), each behind its own home router
on the same emulated links. The same mails go two ways, in one run:
  bridged   src's Postfix -> src's bridge -> Tox (through both NATs) -> dst's bridge -> Dovecot;
  ordinary  src's Postfix relays over SMTP with STARTTLS (smtp_tls_security_level = encrypt) to
            dst's router's public address, port 25, which dst's router forwards (nftables dnat)
            to dst's Postfix, which hands it to Dovecot: the route the family's mail would take
            without Tox. dst's certificate is self-signed, made by the lab.
Measured: a burst of small mails (msg/s), one-at-a-time latency, one large mail (MiB/s), and the
friend reconnection after restarts of dst's bridge. The kernel has no netem: the links have
rates and loss but no delay, so latencies compare the CPU and protocol costs of the two routes.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from toxbridge.lab import postfix as lab_postfix
from toxbridge.lab.bootstrapd import LAB_DHT_SIZE
from toxbridge.lab.household import Household, befriend_all
from toxbridge.lab.internet import Internet, Link
from toxbridge.lab.ports import wait_until

from . import mail as mails
from . import small
from .lab import SLOW_POSTFIX, SRC_BRIDGE, _parallel, wait_log_time
from .stats import MIB, summary

SMTP_PORT = 25
FRIENDS_TIMEOUT = 180.0
RECONNECT_TIMEOUT = 180.0
LARGE_TIMEOUT = 900.0
DEFAULT_LINK = Link(down_mbit=50, up_mbit=5)


class InternetLab:
    """The lab internet with src and dst behind their routers, friends, and dst's smtpd on its
    LAN address for the ordinary route. Use as a context manager."""

    def __init__(
        self,
        root: Path,
        link: Link = DEFAULT_LINK,
        compression: bool = True,
        upload_limit_kbit: int = 0,
        dht_nodes: int = LAB_DHT_SIZE,
    ) -> None:
        self.root = Path(root)
        self.link = link
        self.compression = compression
        self.upload_limit_kbit = upload_limit_kbit  # src's tox.upload_limit_kbit (0: unpaced)
        self.net = Internet(self.root / "internet", dht_nodes=dht_nodes)
        self.src: Household | None = None
        self.dst: Household | None = None
        self.setup_seconds: dict[str, float] = {}

    def start(self) -> InternetLab:
        t0 = time.monotonic()
        self.net.start()
        src_site = self.net.add_site("src", self.link)
        dst_site = self.net.add_site("dst", dataclasses.replace(self.link, forward_tcp=(SMTP_PORT,)))
        cert, key = lab_postfix.self_signed_certificate(self.root / "tls", "dst.test")
        boot = self.net.bootstrap_nodes()
        tox = {**self.net.tox_settings(), "compression": self.compression}
        self.src = Household(
            self.root,
            "src",
            {"ann": "ann-pw"},
            boot,
            tox_settings={**tox, "upload_limit_kbit": self.upload_limit_kbit},
            netns=src_site.host_ns,
            bridge_settings=SRC_BRIDGE,
            postfix_extra={
                **SLOW_POSTFIX,
                # the ordinary route: whatever is not for Tox goes to dst's public address, TLS or not at all
                "default_transport": "smtp",
                "relayhost": f"[{dst_site.plan.wan}]:{SMTP_PORT}",
                "smtp_tls_security_level": "encrypt",
                "smtp_tls_loglevel": "1",
            },
        )
        self.dst = Household(
            self.root,
            "dst",
            {"ben": "ben-pw", "direct": "direct-pw"},
            boot,
            tox_settings=tox,
            netns=dst_site.host_ns,
            postfix_services=[f"{dst_site.plan.host}:{SMTP_PORT} inet n - n - - smtpd"],
            postfix_extra={
                "inet_interfaces": f"127.0.0.1, {dst_site.plan.host}",
                "smtpd_tls_cert_file": str(cert),
                "smtpd_tls_key_file": str(key),
                "smtpd_tls_security_level": "may",
                "smtpd_tls_loglevel": "1",
            },
        )
        _parallel([self.src.start, self.dst.start])
        self.setup_seconds["households"] = time.monotonic() - t0
        befriend_all(self.src, "ann", [(self.dst, "ben")], timeout=FRIENDS_TIMEOUT)
        src = self.src
        with src.inside():
            if not wait_until(lambda: not src.postfix.queue(), 60, interval=0.2):
                src.postfix.flush()
                src.postfix.wait_queue_empty(60)
        self.setup_seconds["ready"] = time.monotonic() - t0
        return self

    def homes(self) -> tuple[Household, Household]:
        assert self.src is not None and self.dst is not None, "start() first"
        return self.src, self.dst

    def paths(self) -> tuple[small.MailPath, small.MailPath]:
        """(ordinary, bridged): both from src's Postfix into dst's Dovecot."""
        src, dst = self.homes()

        def path(name: str, user: str, recipient: str, bridge: Household | None) -> small.MailPath:
            return small.MailPath(
                name,
                src.postfix.smtp_port,
                dst.dovecot.imap_port,
                user,
                f"{user}-pw",
                src.address("ann"),
                recipient,
                src.postfix.flush,
                bridge,
                sender_ns=src.netns,
                receiver_ns=dst.netns,
            )

        ordinary = path("ordinary", "direct", dst.address("direct"), None)
        bridged = path("bridged", "ben", dst.tox_address("ben"), src)
        return ordinary, bridged

    def tls_sessions(self) -> int:
        """How many TLS sessions src's Postfix logged to dst: proof the ordinary route used STARTTLS."""
        src, _ = self.homes()
        try:
            text = src.postfix.maillog.read_text(errors="replace")
        except OSError:
            return 0
        return sum("TLS connection established to" in line for line in text.splitlines())

    def stop(self) -> None:
        homes = [h for h in (self.src, self.dst) if h is not None]
        _parallel([h.stop for h in homes])
        self.net.stop()

    def __enter__(self) -> InternetLab:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def large_mail(path: small.MailPath, size: int, seed: bytes, poll: float) -> dict:
    """One mail of `size` bytes along `path`: SMTP accepted -> visible in IMAP."""
    message = mails.compose_large(
        f"large-{path.name}-{uuid.uuid4().hex[:8]}", path.sender, path.recipient, size, seed
    )
    with small.watching(path, poll) as watch:
        small.inject(path, [message], 1, timeout=LARGE_TIMEOUT)
        # no flush while it travels: over a 5 Mbit/s uplink nothing arrives for a minute or more
        outcome = small.wait_visible(
            watch, [message.bench_id], LARGE_TIMEOUT, path.flush, stall=LARGE_TIMEOUT
        )
        seen = watch.seen.get(message.bench_id, (None,))[0]
    out: dict = {**outcome, "size": message.size, "submit_s": message.accepted_at - message.started_at}
    if seen:
        out["accepted_to_visible_s"] = seen - message.accepted_at
        out["mib_s"] = message.size / MIB / out["accepted_to_visible_s"]
    return out


def reconnections(lab: InternetLab, restarts: int, log: Callable[[str], None]) -> dict:
    """dst's bridge stopped and started `restarts` times: seconds from the new process's start
    to its friend connection with ann (its log line), as a family member restarting the box sees."""
    src, dst = lab.homes()
    ann = src.tox_ids["ann"][:8].lower()
    seconds = []
    for _ in range(restarts):
        dst.stop_bridge()
        mark = dst.log_mark()
        started = time.time()
        dst.start_bridge()
        seconds.append(wait_log_time(dst, rf"ben: friend {ann} online", mark, RECONNECT_TIMEOUT) - started)
    out = {"restarts": restarts, "seconds": seconds, **summary(seconds)}
    log(f"  reconnection after {restarts} restarts: p50 {out['p50']:.1f} s, p95 {out['p95']:.1f} s")
    return out


def run(
    root: Path,
    link: Link,
    burst: int,
    latency_mails: int,
    sessions: int,
    size: int,
    warmup: int,
    large_size: int,
    restarts: int,
    seed: bytes,
    poll: float,
    log: Callable[[str], None] = print,
    compression: bool = True,
    upload_limit_kbit: int = 0,
    dht_nodes: int = LAB_DHT_SIZE,
) -> dict:
    params = {
        **dataclasses.asdict(link),
        "delay": "none (no netem)",
        "compression": compression,
        "upload_limit_kbit": upload_limit_kbit,
        "dht_nodes": dht_nodes,
    }
    result: dict = {"link": link.describe(), "link_params": params}
    with InternetLab(root, link, compression, upload_limit_kbit, dht_nodes) as lab:
        result["setup_s"] = lab.setup_seconds
        log(f"  lab internet up ({link.describe()}), friends after {lab.setup_seconds['ready']:.1f} s")
        ordinary, bridged = lab.paths()
        for path in (ordinary, bridged):
            result.setdefault("small", {})[path.name] = small.run(
                path, burst, latency_mails, sessions, size, warmup, poll, log=log
            )
        if large_size:
            for path in (ordinary, bridged):
                out = large_mail(path, large_size, seed, poll)
                result.setdefault("large", {})[path.name] = out
                log(f"  {path.name} {large_size / MIB:.1f} MiB: {out.get('mib_s') or 0:.2f} MiB/s")
        result["tls_sessions"] = lab.tls_sessions()
        if restarts:
            result["reconnect"] = reconnections(lab, restarts, log)
    return result
