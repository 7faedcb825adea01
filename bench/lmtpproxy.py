"""A timestamping TCP proxy between the receiving bridge and its Dovecot's LMTP (--stages).

Each mail through it is stamped: MAIL FROM, the message's first bytes (the bridge's
X-Toxbridge-Id header), its end (CRLF.CRLF), Dovecot's final 250 2.0.0. That splits the last leg
of a bridged mail into the bridge's LMTP dialogue and Dovecot's own delivery time, without
touching either. The bridge keeps one connection per mailbox and sends one mail at a time on
it, so the stamps of a connection follow each other. A diagnostic: it adds a hop (threads in
the bench process), so the bench's own numbers come from runs without it.
"""

from __future__ import annotations

import socket
import threading
import time

from .stats import summary


class LmtpProxy:
    def __init__(self) -> None:
        self.upstream = 0  # Dovecot's LMTP port, set once known
        self.sessions: list[dict] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="lmtp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            session = {"connected": time.monotonic(), "mails": []}
            self.sessions.append(session)
            threading.Thread(target=self._serve, args=(client, session), daemon=True).start()

    def _serve(self, client: socket.socket, session: dict) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        for s in (client, upstream):  # as the bridge's own socket: no Nagle (40 ms stalls otherwise)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(upstream, client, session, False), daemon=True).start()
        self._pump(client, upstream, session, True)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, session: dict, from_bridge: bool) -> None:
        tail = b""
        try:
            while data := src.recv(65536):
                now = time.monotonic()
                dst.sendall(data)
                seen = tail + data
                mails = session["mails"]
                if from_bridge:
                    if b"MAIL FROM:" in data:
                        mails.append({"mail": now})
                        # the previous mail's CRLF.CRLF may still be in the tail: not this one's end
                        seen = data[data.index(b"MAIL FROM:") :]
                    mail = mails[-1] if mails else {}
                    if "message_start" not in mail and b"X-Toxbridge-Id:" in seen:
                        mail["message_start"] = now
                    if "message_end" not in mail and b"\r\n.\r\n" in seen:
                        mail["message_end"] = now
                elif (
                    mails and "message_end" in mails[-1] and "final" not in mails[-1] and b"250 2.0.0" in seen
                ):
                    mails[-1]["final"] = now
                tail = seen[-32:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def mark(self) -> float:
        return time.monotonic()

    def stats(self, since: float = 0.0) -> dict:
        done = [
            m
            for s in self.sessions
            for m in s["mails"]
            if m["mail"] >= since and {"message_start", "message_end", "final"} <= m.keys()
        ]
        if not done:
            return {"mails": 0}
        span = max(m["final"] for m in done) - min(m["mail"] for m in done)
        return {
            "mails": len(done),
            "connections": sum(1 for s in self.sessions if any(m in done for m in s["mails"])),
            # the bridge's LMTP dialogue up to the message (MAIL, RCPT, DATA)
            "mail_to_message_s": summary([m["message_start"] - m["mail"] for m in done]),
            # Dovecot's delivery: after the last byte until its 250 (Sieve, dedup database, maildir)
            "message_end_to_250_s": summary([m["final"] - m["message_end"] for m in done]),
            "mail_to_250_s": summary([m["final"] - m["mail"] for m in done]),
            # share of the time Dovecot had a mail of the bridge's in hand (1.0 = busy throughout)
            "mean_in_flight": sum(m["final"] - m["mail"] for m in done) / span if span > 0 else None,
        }

    def close(self) -> None:
        self._listener.close()
