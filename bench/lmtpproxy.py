"""A timestamping TCP proxy between the receiving bridge and its Dovecot's LMTP (--stages).

Each LMTP session through it is stamped: connected, the message's first bytes (the bridge's
X-Toxbridge-Id header), its end (CRLF.CRLF), Dovecot's final 250 2.0.0. That splits the last leg
of a bridged mail into the bridge's LMTP dialogue and Dovecot's own delivery time, without
touching either. A diagnostic: it adds a hop (threads in the bench process), so the bench's own
numbers come from runs without it.
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
            session = {"connected": time.monotonic()}
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
                if from_bridge:
                    if "message_start" not in session and b"X-Toxbridge-Id:" in seen:
                        session["message_start"] = now
                    if "message_end" not in session and b"\r\n.\r\n" in seen:
                        session["message_end"] = now
                elif "message_end" in session and "final" not in session and b"250 2.0.0" in seen:
                    session["final"] = now
                tail = seen[-32:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def mark(self) -> int:
        return len(self.sessions)

    def stats(self, since: int = 0) -> dict:
        done = [s for s in self.sessions[since:] if {"message_start", "message_end", "final"} <= s.keys()]
        if not done:
            return {"sessions": 0}
        span = max(s["final"] for s in done) - min(s["connected"] for s in done)
        return {
            "sessions": len(done),
            # the bridge's LMTP dialogue up to DATA (connect, greeting, LHLO, MAIL, RCPT, DATA)
            "connect_to_message_s": summary([s["message_start"] - s["connected"] for s in done]),
            # Dovecot's delivery: after the last byte until its 250 (Sieve, dedup database, maildir)
            "message_end_to_250_s": summary([s["final"] - s["message_end"] for s in done]),
            "connect_to_250_s": summary([s["final"] - s["connected"] for s in done]),
            "mean_in_flight": sum(s["final"] - s["connected"] for s in done) / span if span > 0 else None,
        }

    def close(self) -> None:
        self._listener.close()
