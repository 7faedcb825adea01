"""One bare ToxNode in its own process, for the raw toxcore transfer (the transport's limit).

    python -m bench.rawtox_peer --bootstrap HOST:PORT:KEYHEX

Commands arrive on stdin and events leave on stdout, one JSON object a line. Times are
time.monotonic() (CLOCK_MONOTONIC: the same clock in every process of the machine).

  {"cmd": "befriend", "address": HEX}        send a friend request (the other side accepts any)
  {"cmd": "mode", "mode": "default"|"fast"}  how the loop iterates (below)
  {"cmd": "send", "id": N, "path": FILE}     send the file's bytes as one transfer
  {"cmd": "quit"}

  {"event": "ready", "address": HEX}
  {"event": "friend", "status": 0|1|2, "t": T}
  {"event": "offered", "id": N, "t": T}                      (sender: tox_file_send returned)
  {"event": "sent_all", "id": N, "t": T, "chunks": C, "iterations": I}
  {"event": "received", "size": S, "t_offer": T, "t_first": T, "t_done": T, "sha256": HEX, "iterations": I}

Modes. default: toxcore's own loop, tox_iterate then sleep tox_iteration_interval() (50 ms idle,
1 ms while a transfer runs), as a plain Tox client does. fast: while a transfer runs, iterate
again as soon as the event loop is free (no sleep), so every chunk toxcore asks for is filled at
once and acknowledgements go out without waiting; idle it sleeps as in default. In both modes a
chunk is handed over inside the chunk-request callback.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import threading
import time

from toxbridge.toxcore.node import (
    FILE_CONTROL_RESUME,
    FILE_KIND_DATA,
    ToxNode,
    ToxOptions,
)


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class BenchNode(ToxNode):
    """A ToxNode whose iterate loop follows `mode` (see module doc). It replaces ToxNode's own
    loop (which caps the sleep at max_interval_ms); everything else is ToxNode's."""

    mode = "default"
    busy = False
    iterations = 0

    async def _run(self) -> None:
        tox = self._tox
        while True:
            try:
                tox.iterate()
            except Exception as e:  # a callback raised: say so, keep iterating
                print(f"rawtox_peer: exception in tox_iterate: {e!r}", file=sys.stderr)
            self.iterations += 1
            if self.mode == "fast" and self.busy:
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(tox.iteration_interval() / 1000)


class Peer:
    def __init__(self, node: BenchNode) -> None:
        self.node = node
        node.handler = self
        self.outgoing: dict[int, tuple[int, bytes]] = {}  # file number -> (id, payload)
        self.chunks = 0
        self.incoming: dict[int, dict] = {}

    # --- commands (on the loop thread)

    def command(self, cmd: dict) -> None:
        kind = cmd.get("cmd")
        if kind == "befriend":
            self.node.friend_add(bytes.fromhex(cmd["address"]), b"raw transfer bench")
        elif kind == "mode":
            self.node.mode = cmd["mode"]
        elif kind == "send":
            with open(cmd["path"], "rb") as f:
                payload = f.read()
            friend = self.node.friends()[0]
            self.chunks = 0
            self.node.iterations = 0
            self.node.busy = True
            number = self.node.file_send(friend, FILE_KIND_DATA, len(payload), hashlib.sha256(payload).digest(),
                                         b"raw.bin")
            self.outgoing[number] = (cmd["id"], payload)
            emit(event="offered", id=cmd["id"], t=time.monotonic())
        elif kind == "quit":
            asyncio.get_running_loop().stop()

    # --- toxcore events

    def on_friend_request(self, node, public_key, message) -> None:
        node.friend_add_norequest(public_key)

    def on_friend_connection(self, node, friend, status) -> None:
        emit(event="friend", status=status, t=time.monotonic())

    def on_file_chunk_request(self, node, friend, number, position, length) -> None:
        entry = self.outgoing.get(number)
        if entry is None:
            return
        bench_id, payload = entry
        if length == 0:
            del self.outgoing[number]
            self.node.busy = bool(self.outgoing or self.incoming)
            emit(event="sent_all", id=bench_id, t=time.monotonic(), chunks=self.chunks, iterations=node.iterations)
            return
        node.file_send_chunk(friend, number, position, payload[position:position + length])
        self.chunks += 1

    def on_file_recv(self, node, friend, number, kind, size, filename) -> None:
        self.incoming[number] = {"buf": bytearray(size), "size": size, "t_offer": time.monotonic(), "t_first": None}
        node.iterations = 0
        node.busy = True
        node.file_control(friend, number, FILE_CONTROL_RESUME)

    def on_file_recv_chunk(self, node, friend, number, position, data) -> None:
        inc = self.incoming.get(number)
        if inc is None:
            return
        if data:
            if inc["t_first"] is None:
                inc["t_first"] = time.monotonic()
            inc["buf"][position:position + len(data)] = data
            return
        done = time.monotonic()
        del self.incoming[number]
        self.node.busy = bool(self.outgoing or self.incoming)
        emit(event="received", size=inc["size"], t_offer=inc["t_offer"], t_first=inc["t_first"], t_done=done,
             sha256=hashlib.sha256(inc["buf"]).hexdigest(), iterations=node.iterations)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT:PUBLIC_KEY_HEX of the local tox-bootstrapd")
    args = parser.parse_args()
    host, port, key = args.bootstrap.split(":")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    start = random.randint(34000, 39000)  # away from the bridges' 33445-33545
    node = BenchNode(ToxOptions(udp=True, local_discovery=False, ipv6=False, start_port=start, end_port=start + 200))
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
