"""``perfguard ab`` in lockstep (its default): the two sides run at once, on the same CPUs, and
take turns round by round.

On a shared VM the host takes the CPU away for a while (measured: a test's speed moved 1.2-2.75x
between 3-second windows, with no steal time reported, and a test's base and head measured one after
the other, a fraction of a second apart, still differed up to 1.8x in half the rounds of a
recording). Whole runs in turn put such a state on one side of a round only. In lockstep both sides'
pytest processes start together, pinned to the same CPUs (``ab_process``), and reach each test's
call; one side starts it (the order is drawn at random for each test) and after each measured round
(``measure_calls``'s ``between``) hands the turn to the other side for one of its rounds, so that a
test's base and head rounds alternate a few milliseconds apart and any slow spell hits both. Only
one side runs inside a call at any time: each side asks for its turn before a test's call
(``Turns``, over a loopback TCP socket: no path to outgrow), and waits after it until the other
side's call of the test is done too; everything between calls (collection, fixtures, teardown,
non-perf work) runs freely.

Tests that only one side has, that one side skips, or that the sides reach in another order take
their turns alone, the side that is behind first, so that the sides meet again at the next test.
A side that ends or dies gives the other side every later turn.

No pytest import here: the side's end is ``TurnClient``, used by ``ab_side``"""

from __future__ import annotations

import json
import queue
import random
import socket
import threading
from collections.abc import Callable
from typing import Any

TURNS_ENV = "PERFGUARD_AB_TURNS"  # host:port where a side asks for its turns
SIDES = ("base", "head")


class Turns:
    """The broker: gives the two sides their turns, a test's rounds alternating between them.

    ``serve`` runs in a thread until both sides have ended (``ended(side)`` from the thread that
    waits for the processes, or their connection closing). ``paired`` and ``alone`` count the
    tests both sides measured together and the calls that took their turns alone."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.paired = 0
        self.alone = 0
        self.error: str | None = None
        self._events: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue()
        self._conns: dict[str, socket.socket] = {}  # by side, once it said which
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._server = socket.create_server(("127.0.0.1", 0), backlog=len(SIDES))
        host, port = self._server.getsockname()[:2]
        self.address = f"{host}:{port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def ended(self, side: str) -> None:
        self._events.put((side, None))

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._server.close()
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # now, whoever else holds it: a waiting side sees the end
            except OSError:
                pass
            conn.close()

    def _accept(self) -> None:
        while True:  # until closed: a stray connection must not take a side's place
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            with self._lock:
                if self._closed:  # accepted as it closed: end it too
                    conn.close()
                    return
                self._open.append(conn)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        """A side's messages as events; its end (or a line that is not a message) as ``None``."""
        side = None
        try:
            with conn.makefile("r") as lines:
                for line in lines:
                    msg = json.loads(line)
                    if side is not None:
                        self._events.put((side, msg))
                    elif msg.get("side") in SIDES:
                        side = msg["side"]
                        self._conns[side] = conn
                    else:
                        return  # not a side
        except (OSError, ValueError, AttributeError):
            pass
        finally:
            if side is not None:
                self._events.put((side, None))

    def serve(self) -> None:
        """Give the turns until both sides have ended. A fault here ends every side's connection, so
        that no side waits forever, and is kept in ``error``: the round's measurements then ran
        unsynchronised and ``run_pair`` refuses them."""
        try:
            self._serve()
        except Exception as exc:  # noqa: BLE001 - any fault: refuse the round, never hang it
            self.error = f"{type(exc).__name__}: {exc}"
            self.close()

    def _serve(self) -> None:
        waiting: dict[str, str] = {}  # side -> the test whose call it waits to make
        tests: dict[str, dict[str, int]] = {}
        gone: set[str] = set()

        def take(side: str, msg: dict[str, Any] | None) -> None:
            if msg is None:
                gone.add(side)
                waiting.pop(side, None)
            elif "tests" in msg:
                tests[side] = {nodeid: k for k, nodeid in enumerate(msg["tests"])}
            elif "call" in msg:
                waiting[side] = msg["call"]

        while len(gone) < len(SIDES):
            while not all(s in waiting or s in gone for s in SIDES):
                take(*self._events.get())
            if len(gone) == len(SIDES):
                return
            if len(waiting) == 2 and waiting["base"] == waiting["head"]:
                order = list(SIDES)
                self.rng.shuffle(order)
                self.paired += 1
            else:
                order = [first_alone(waiting, tests)]
                self.alone += 1
            for side in order:
                del waiting[side]
            self._call(order, take, gone)

    def _call(self, order: list[str], take: Callable[[str, dict[str, Any] | None], None], gone: set[str]) -> None:
        """One test's call on ``order``'s sides: the first starts; at each round's end (``pause``) the
        turn passes to the other while it is still in its call; a side whose call is done waits
        until the other's is too, so that nothing it does next runs beside a measured round."""
        active = list(order)
        turn = order[0]
        self._go(turn)
        while active:
            who, msg = self._events.get()
            take(who, msg)
            if msg is None:  # it died
                if who in active:
                    active.remove(who)
                if who != turn:
                    continue
            elif who != turn or not ("pause" in msg or "done" in msg):
                continue  # only the side whose turn it is runs; news from the other is noted
            elif "done" in msg:
                active.remove(turn)
            turn = next((s for s in active if s != turn), turn)
            if active:
                self._go(turn)
        for side in order:
            if side not in gone:
                self._go(side)  # both calls done: both go on

    def _go(self, side: str) -> None:
        try:
            self._conns[side].sendall(b"go\n")
        except OSError:
            pass  # it died: its connection's end says so


def first_alone(waiting: dict[str, str], tests: dict[str, dict[str, int]]) -> str:
    """Which waiting side takes a turn alone: one whose test the other side does not have; else the
    one that is behind, whose test the other side has passed (skipped, or ran alone); else the base.
    ``tests``: each side's tests, by nodeid, their places in its order."""
    if len(waiting) == 1:
        return next(iter(waiting))
    base, head = waiting["base"], waiting["head"]
    in_base, in_head = tests.get("base", {}), tests.get("head", {})
    if base not in in_head:
        return "base"
    if head not in in_base:
        return "head"
    return "head" if in_base[head] < in_base[base] else "base"


class TurnClient:
    """A side's end: ``call(nodeid)`` blocks until it is this side's turn to start the call;
    ``pause()`` between two measured rounds passes the turn to the other side for one of its rounds;
    ``done()`` after the call blocks until the other side's call of the same test is done too. If
    the broker is gone (``perfguard ab`` ended), every turn is granted at once."""

    def __init__(self, address: str, side: str) -> None:
        host, port = address.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._lines = self._sock.makefile("r")
        self._send({"side": side})

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self._sock.sendall((json.dumps(msg) + "\n").encode())
        except OSError:
            pass

    def tests(self, nodeids: list[str]) -> None:
        self._send({"tests": nodeids})

    def call(self, nodeid: str) -> None:
        self._wait({"call": nodeid})

    def pause(self) -> None:
        self._wait({"pause": True})

    def done(self) -> None:
        self._wait({"done": True})

    def _wait(self, msg: dict[str, Any]) -> None:
        self._send(msg)
        try:
            self._lines.readline()  # "go", or "" when the broker is gone
        except OSError:
            pass  # gone too

    def close(self) -> None:
        self._lines.close()
        self._sock.close()
