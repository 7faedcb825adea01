"""One bare ToxNode in its own process, for the raw toxcore transfer (the transport's limit).

    python -m bench.rawtox_peer --bootstrap HOST:PORT:KEYHEX

Commands arrive on stdin and events leave on stdout, one JSON object a line. Times are
time.monotonic() (CLOCK_MONOTONIC: the same clock in every process of the machine).

  {"cmd": "befriend", "address": HEX}        send a friend request (the other side accepts any)
  {"cmd": "mode", "mode": "default"|"fast"}  how the loop iterates (below)
  {"cmd": "send", "id": N, "path": FILE}     send the file's bytes as one transfer
  {"cmd": "burst", "count": N, "size": S, "inflight": K}
                                             N small transfers of S bytes, K at a time: the receiver
                                             answers each complete one with a lossless packet, and
                                             only that answer lets the next one start (as a mail
                                             waits for the peer bridge's result)
  {"cmd": "quit"}

  {"event": "ready", "address": HEX}
  {"event": "friend", "status": 0|1|2, "t": T}
  {"event": "offered", "id": N, "t": T}                      (sender: tox_file_send returned)
  {"event": "sent_all", "id": N, "t": T, "chunks": C, "iterations": I}
  {"event": "received", "size": S, "t_offer": T, "t_first": T, "t_done": T, "sha256": HEX, "iterations": I}
  {"event": "burst_done", "count": N, "seconds": S, "latencies": [...], "answered": [...]}
                                             (sender: offer -> answer, and burst start -> answer, s)

Modes. default: toxcore's own loop, tox_iterate then sleep tox_iteration_interval() (50 ms idle,
1 ms while a transfer runs), as a plain Tox client does. bridge: ToxNode's own loop, the one the
bridge runs (whatever toxbridge/tox/node.py does now). fast: while a transfer runs, iterate
again as soon as the event loop is free (no sleep), so every chunk toxcore asks for is filled at
once and acknowledgements go out without waiting; idle it sleeps as in default. In both modes a
chunk is handed over inside the chunk-request callback.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable

from toxbridge.tox.errors import ToxSendQueueFull
from toxbridge.tox.library import FILE_CONTROL_RESUME, FILE_KIND_DATA
from toxbridge.tox.node import ToxNode
from toxbridge.tox.options import ToxOptions


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class BenchNode(ToxNode):
    """A ToxNode whose iterate loop follows `mode` (see module doc). It replaces ToxNode's own
    loop (which caps the sleep at max_interval_ms); everything else is ToxNode's."""

    mode = "default"
    busy_until = 0.0
    iterations = 0
    after_iterate: Callable[[], None] | None = None

    def set_mode(self, mode: str) -> None:
        """default | fast: this class's loop; bridge: ToxNode's own loop, as the bridge runs it."""
        bridge_loop = (mode == "bridge") != (self.mode == "bridge")
        self.mode = mode
        if bridge_loop and self._task is not None:
            assert self._loop is not None  # set with the task
            self._task.cancel()
            run = ToxNode._run(self) if mode == "bridge" else self._run()
            self._task = self._loop.create_task(run)

    def touch(self) -> None:
        """Transfer activity: in fast mode, iterate without sleeping for the next second."""
        self.busy_until = time.monotonic() + 1.0

    async def _run(self) -> None:
        tox = self._tox
        while True:
            try:
                tox.iterate()
            except Exception as e:  # a callback raised: say so, keep iterating
                print(f"rawtox_peer: exception in tox_iterate: {e!r}", file=sys.stderr)
            self.iterations += 1
            if self.after_iterate is not None:
                self.after_iterate()
            if self.mode == "fast" and time.monotonic() < self.busy_until:
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(tox.iteration_interval() / 1000)


SMALL_NAME = b"small"
ANSWER = 0xA5  # first byte of the receiver's answer packet (lossless custom packets: 160..191)


class Peer:
    def __init__(self, node: BenchNode) -> None:
        self.node = node
        node.handler = self
        self.outgoing: dict[int, tuple[int, bytes]] = {}  # file number -> (id, payload)
        self.chunks = 0
        self.incoming: dict[int, dict] = {}
        self.burst: dict | None = None  # sender side of a burst of small transfers
        self.answers: list[tuple[int, bytes]] = []  # answers toxcore's send queue had no room for yet
        self.retry_pending = False
        node.after_iterate = self._send_answers

    def _send_answers(self) -> None:
        while self.answers:
            friend, packet = self.answers[0]
            try:
                self.node.send_lossless_packet(friend, packet)
            except ToxSendQueueFull:
                # A cold link's congestion control refuses even a 33-byte answer for a while. The
                # default and fast loops call this after every iteration; the bridge's loop does
                # not, and a refused last answer then waited forever (seen: a burst that never ended).
                if self.node.mode == "bridge" and not self.retry_pending:
                    self.retry_pending = True
                    asyncio.get_running_loop().call_later(0.001, self._retry_answers)
                return
            self.answers.pop(0)

    def _retry_answers(self) -> None:
        self.retry_pending = False
        self._send_answers()

    def _start_small(self) -> None:
        b = self.burst
        assert b is not None, "only during a burst"
        file_id = os.urandom(32)
        number = self.node.file_send(
            self.node.friends()[0], FILE_KIND_DATA, len(b["payload"]), file_id, SMALL_NAME
        )
        self.outgoing[number] = (-1, b["payload"])
        b["started"][file_id] = time.monotonic()
        b["left"] -= 1

    def on_lossless_packet(self, node, friend, data) -> None:
        node.touch()
        b = self.burst
        if b is None or data[:1] != bytes([ANSWER]):
            return
        started = b["started"].pop(data[1:33], None)
        if started is None:
            return
        now = time.monotonic()
        b["latencies"].append(now - started)
        b["answered"].append(now - b["t0"])
        if b["left"] > 0:
            self._start_small()
        elif not b["started"]:
            self.burst = None
            emit(
                event="burst_done",
                count=len(b["latencies"]),
                seconds=now - b["t0"],
                latencies=b["latencies"],
                answered=b["answered"],
            )

    # --- commands (on the loop thread)

    def command(self, cmd: dict) -> None:
        kind = cmd.get("cmd")
        if kind == "befriend":
            self.node.friend_add(bytes.fromhex(cmd["address"]), b"raw transfer bench")
        elif kind == "mode":
            self.node.set_mode(cmd["mode"])
        elif kind == "send":
            with open(cmd["path"], "rb") as f:
                payload = f.read()
            friend = self.node.friends()[0]
            self.chunks = 0
            self.node.iterations = 0
            self.node.touch()
            number = self.node.file_send(
                friend, FILE_KIND_DATA, len(payload), hashlib.sha256(payload).digest(), b"raw.bin"
            )
            self.outgoing[number] = (cmd["id"], payload)
            emit(event="offered", id=cmd["id"], t=time.monotonic())
        elif kind == "burst":
            self.node.touch()
            self.burst = {
                "left": cmd["count"],
                "payload": os.urandom(cmd["size"]),
                "started": {},
                "latencies": [],
                "answered": [],
                "t0": time.monotonic(),
            }
            for _ in range(min(cmd["inflight"], cmd["count"])):
                self._start_small()
        elif kind == "quit":
            asyncio.get_running_loop().stop()

    # --- toxcore events

    def on_friend_request(self, node, public_key, message) -> None:
        node.friend_add_norequest(public_key)

    def on_friend_connection(self, node, friend, status) -> None:
        emit(event="friend", status=status, t=time.monotonic())

    def on_file_chunk_request(self, node, friend, number, position, length) -> None:
        node.touch()
        entry = self.outgoing.get(number)
        if entry is None:
            return
        bench_id, payload = entry
        if length == 0:
            del self.outgoing[number]
            if bench_id >= 0:
                emit(
                    event="sent_all",
                    id=bench_id,
                    t=time.monotonic(),
                    chunks=self.chunks,
                    iterations=node.iterations,
                )
            return
        node.file_send_chunk(friend, number, position, payload[position : position + length])
        self.chunks += 1

    def on_file_recv(self, node, friend, number, kind, size, filename) -> None:
        if filename == SMALL_NAME:
            self.incoming[number] = {
                "small": True,
                "file_id": node.file_id(friend, number),
                "buf": bytearray(size),
            }
            node.touch()
            node.file_control(friend, number, FILE_CONTROL_RESUME)
            return
        self.incoming[number] = {
            "buf": bytearray(size),
            "size": size,
            "t_offer": time.monotonic(),
            "t_first": None,
        }
        node.iterations = 0
        node.touch()
        node.file_control(friend, number, FILE_CONTROL_RESUME)

    def on_file_recv_chunk(self, node, friend, number, position, data) -> None:
        node.touch()
        inc = self.incoming.get(number)
        if inc is None:
            return
        if inc.get("small"):
            if data:
                inc["buf"][position : position + len(data)] = data
                return
            del self.incoming[number]
            self.answers.append((friend, bytes([ANSWER]) + inc["file_id"]))
            self._send_answers()
            return
        if data:
            if inc["t_first"] is None:
                inc["t_first"] = time.monotonic()
            inc["buf"][position : position + len(data)] = data
            return
        done = time.monotonic()
        del self.incoming[number]
        emit(
            event="received",
            size=inc["size"],
            t_offer=inc["t_offer"],
            t_first=inc["t_first"],
            t_done=done,
            sha256=hashlib.sha256(inc["buf"]).hexdigest(),
            iterations=node.iterations,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--bootstrap", required=True, help="HOST:PORT:PUBLIC_KEY_HEX of the local tox-bootstrapd"
    )
    args = parser.parse_args()
    host, port, key = args.bootstrap.split(":")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    start = random.randint(34000, 39000)  # away from the bridges' 33445-33545
    node = BenchNode(
        ToxOptions(udp=True, local_discovery=False, ipv6=False, start_port=start, end_port=start + 200)
    )
    peer = Peer(node)
    node.bootstrap(host, int(port), bytes.fromhex(key))
    node.start(loop)

    def read_commands() -> None:
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(peer.command, json.loads(line))
        loop.call_soon_threadsafe(loop.stop)  # parent gone

    threading.Thread(target=read_commands, daemon=True).start()
    emit(event="ready", address=node.address.hex())
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(node.stop())


if __name__ == "__main__":
    main()
