"""``ab_turns``: the broker that makes the two sides of ``perfguard ab --lockstep`` take turns round
by round, both sides played by threads over the real sockets (no timing asserted: only who ran when)."""

from __future__ import annotations

import random
import threading

import pytest

from pytest_perfguard.ab_turns import SIDES, TurnClient, Turns, first_alone


def play(turns: Turns, lists: dict[str, list[str]], rounds: dict[str, int] | None = None,
         collected: dict[str, list[str]] | None = None) -> list[tuple[str, str, str]]:
    """Each side a thread that announces its tests and makes each call in its turn, ``rounds[side]``
    rounds a call with a pause between two; the log of every call's start, rounds and end, in the
    order they happened. ``collected``: what a side announces, where it calls fewer (skips)."""
    log: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def side(name: str) -> None:
        client = TurnClient(turns.address, name)
        client.tests((collected or {}).get(name, lists[name]))
        for nodeid in lists[name]:
            client.call(nodeid)
            with lock:
                log.append((name, nodeid, "start"))
            for k in range((rounds or {}).get(name, 0)):
                if k:
                    client.pause()
                with lock:
                    log.append((name, nodeid, f"round {k + 1}"))
            with lock:
                log.append((name, nodeid, "end"))
            client.done()
        client.close()

    for name in SIDES:
        if name not in lists:  # its process ended before it connected
            turns.ended(name)
    server = threading.Thread(target=turns.serve, daemon=True)
    server.start()
    threads = [threading.Thread(target=side, args=(name,), daemon=True) for name in lists]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    server.join(timeout=30)
    assert not server.is_alive() and not any(t.is_alive() for t in threads), "a side waits for a turn forever"
    turns.close()
    return log


def calls(log: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """The calls in the order they ran, each checked to end before the next one starts."""
    out = []
    for start, end in zip(log[::2], log[1::2]):
        assert start[:2] == end[:2] and (start[2], end[2]) == ("start", "end"), "two calls ran at once"
        out.append(start[:2])
    return out


def test_a_tests_two_calls_run_back_to_back_and_never_with_another_call() -> None:
    turns = Turns(random.Random(1))
    tests = ["t::a", "t::b", "t::c"]
    ran = calls(play(turns, {"base": tests, "head": tests}))
    assert [nodeid for _, nodeid in ran] == ["t::a", "t::a", "t::b", "t::b", "t::c", "t::c"]
    assert all({ran[i][0], ran[i + 1][0]} == {"base", "head"} for i in range(0, 6, 2))
    assert (turns.paired, turns.alone) == (3, 0)


def test_a_tests_rounds_alternate_between_the_sides_and_a_side_done_first_waits_for_the_other() -> None:
    turns = Turns(random.Random(1))
    log = play(turns, {"base": ["t::a", "t::b"], "head": ["t::a", "t::b"]}, rounds={"base": 2, "head": 4})
    first = log[0][0]
    a = [(side, what) for side, nodeid, what in log if nodeid == "t::a"]
    if first == "base":
        assert a == [("base", "start"), ("base", "round 1"), ("head", "start"), ("head", "round 1"),
                     ("base", "round 2"), ("base", "end"), ("head", "round 2"), ("head", "round 3"),
                     ("head", "round 4"), ("head", "end")]
    else:
        assert a == [("head", "start"), ("head", "round 1"), ("base", "start"), ("base", "round 1"),
                     ("head", "round 2"), ("base", "round 2"), ("base", "end"), ("head", "round 3"),
                     ("head", "round 4"), ("head", "end")]
    assert log.index(("head", "t::a", "end")) < min(log.index((s, "t::b", "start")) for s in SIDES)
    assert (turns.paired, turns.alone) == (2, 0)


def test_the_order_of_a_pair_is_drawn_per_test_from_the_seed() -> None:
    tests = [f"t::{i}" for i in range(16)]

    def firsts(seed: int) -> list[str]:
        ran = calls(play(Turns(random.Random(seed)), {"base": tests, "head": tests}))
        return [side for side, _ in ran[::2]]

    seven = firsts(7)
    assert set(seven) == {"base", "head"}
    assert firsts(7) == seven and firsts(8) != seven


def test_a_test_that_one_side_lacks_takes_its_turn_alone_and_the_rest_stay_paired() -> None:
    turns = Turns(random.Random(2))
    ran = calls(play(turns, {"base": ["t::a", "t::c"], "head": ["t::a", "t::b", "t::c"]}))
    assert ran[2] == ("head", "t::b")  # after both t::a calls, before the t::c pair
    assert sorted(ran[3:]) == [("base", "t::c"), ("head", "t::c")]
    assert (turns.paired, turns.alone) == (2, 1)


def test_shared_tests_reached_in_another_order_go_on_alone_without_a_deadlock() -> None:
    turns = Turns(random.Random(3))
    ran = calls(play(turns, {"base": ["t::a", "t::b"], "head": ["t::b", "t::a"]}))
    assert sorted(ran) == sorted([(s, n) for s in SIDES for n in ("t::a", "t::b")])
    assert turns.alone >= 2


def test_a_side_that_never_comes_leaves_every_turn_to_the_other() -> None:
    turns = Turns(random.Random(4))
    ran = calls(play(turns, {"base": ["t::a", "t::b"]}))  # the head's pytest died before it connected
    assert ran == [("base", "t::a"), ("base", "t::b")]
    assert (turns.paired, turns.alone) == (0, 2)


@pytest.mark.parametrize("waiting, tests, first", [
    ({"head": "t::a"}, {}, "head"),
    ({"base": "t::x", "head": "t::a"}, {"head": ["t::a"], "base": ["t::a", "t::x"]}, "base"),  # the head lacks it
    ({"base": "t::a", "head": "t::y"}, {"head": ["t::a", "t::y"], "base": ["t::a"]}, "head"),
    ({"base": "t::b", "head": "t::a"}, {"head": ["t::a", "t::b"], "base": ["t::a", "t::b"]}, "head"),  # the base skipped t::a
    ({"base": "t::a", "head": "t::b"}, {"head": ["t::b", "t::a"], "base": ["t::a", "t::b"]}, "base"),  # another order
])
def test_first_alone_lets_the_side_that_is_behind_go_first(waiting, tests, first) -> None:
    assert first_alone(waiting, {side: {n: k for k, n in enumerate(names)} for side, names in tests.items()}) == first


def test_a_test_one_side_skips_leaves_the_sides_paired_from_the_next_test_on() -> None:
    turns = Turns(random.Random(6))
    ran = calls(play(turns, {"base": ["t::b", "t::c"], "head": ["t::a", "t::b", "t::c"]},
                     collected={"base": ["t::a", "t::b", "t::c"]}))  # the base collected t::a, then skipped it
    assert ran[0] == ("head", "t::a")
    assert (turns.paired, turns.alone) == (2, 1)


def test_a_client_whose_broker_is_gone_gets_every_turn_at_once() -> None:
    turns = Turns(random.Random(5))
    client = TurnClient(turns.address, "base")
    turns.close()
    client.call("t::a")  # returns: nothing left to wait for
    client.done()
    client.close()


def test_a_fault_in_the_broker_ends_every_side_and_is_kept() -> None:
    turns = Turns(random.Random(7))
    client = TurnClient(turns.address, "base")
    turns._events.put(("base", {"call": 1}))  # noqa: SLF001 - an event the broker cannot handle
    turns._events.put(("head", {"call": "t::a"}))  # noqa: SLF001
    turns._conns.clear()  # noqa: SLF001 - so that giving a turn fails: no connection for the side
    turns.serve()
    assert turns.error is not None and turns.error.startswith("KeyError")
    client.call("t::a")  # its connection was ended: it does not wait
    client.close()


def test_a_stray_connection_does_not_take_a_sides_place() -> None:
    import socket

    turns = Turns(random.Random(8))
    host, port = turns.address.rsplit(":", 1)
    stray = socket.create_connection((host, int(port)))
    stray.sendall(b'{"hello": "world"}\n')
    ran = calls(play(turns, {"base": ["t::a"], "head": ["t::a"]}))
    assert sorted(ran) == [("base", "t::a"), ("head", "t::a")] and turns.paired == 1
    stray.close()
