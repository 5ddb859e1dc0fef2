"""WorkQueue: dedup, one worker per key, delayed adds, per-key backoff with jitter and cap."""

from __future__ import annotations

import threading
import time

import pytest

from vsphere_kale.reconcile.workqueue import WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_duplicates_are_queued_once() -> None:
    q = WorkQueue()
    for key in ("a", "b", "a", "a", "b"):
        q.add(key)
    assert len(q) == 2
    assert [q.get(timeout=0), q.get(timeout=0), q.get(timeout=0)] == ["a", "b", None]


def test_key_in_processing_is_not_handed_out_twice_but_requeued_on_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")  # changed while a worker holds it
    assert q.get(timeout=0) is None  # not given to a second worker
    q.done("a")
    assert q.get(timeout=0) == "a"  # processed again: the change is not lost
    q.done("a")
    assert q.get(timeout=0) is None


def test_add_after_waits_until_due_and_earliest_wins() -> None:
    clock = FakeClock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 5)
    q.add_after("a", 2)
    q.add_after("a", 9)
    assert q.get(timeout=0) is None and q.delayed == 1
    clock.now += 2
    assert q.get(timeout=0) == "a"
    q.done("a")
    clock.now += 10
    assert q.get(timeout=0) is None  # superseded entries do not fire again


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    q = WorkQueue(base_delay=1.0, max_delay=10.0, rng=lambda: 1.0)  # max jitter: +20 %
    delays = [q.add_rate_limited("a") for _ in range(6)]
    assert delays == pytest.approx([1.2, 2.4, 4.8, 9.6, 10.0, 10.0])
    low = WorkQueue(base_delay=1.0, max_delay=10.0, rng=lambda: 0.0)  # min jitter: -20 %
    assert low.add_rate_limited("a") == pytest.approx(0.8)
    assert q.failures("a") == 6
    q.forget("a")
    assert q.add_rate_limited("a") == pytest.approx(1.2)  # back to the base after a success
    assert q.add_rate_limited("other") == pytest.approx(1.2)  # per key


def test_retry_after_is_a_floor() -> None:
    q = WorkQueue(base_delay=0.1, rng=lambda: 0.5)
    assert q.add_rate_limited("a", retry_after=3) == 3
    assert q.add_rate_limited("b", retry_after=0.01) == pytest.approx(0.1)


def test_get_blocks_until_add_and_shutdown_unblocks() -> None:
    # The queue's clock tells when the worker is inside get() (it reads it for its deadline).
    readers: list[str] = []

    def clock() -> float:
        readers.append(threading.current_thread().name)
        return time.monotonic()

    q = WorkQueue(clock=clock)
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)), name="worker")
    t.start()
    deadline = time.monotonic() + 5
    while "worker" not in readers:
        assert time.monotonic() < deadline, "the worker never called get()"
        time.sleep(0.005)
    assert got == []  # blocked: nothing to hand out yet
    q.add("x")
    t.join(timeout=5)
    assert got == ["x"]
    t2 = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t2.start()
    q.shutdown()
    t2.join(timeout=5)
    assert not t2.is_alive() and got[-1] is None


def test_delayed_key_wakes_a_blocked_worker() -> None:
    q = WorkQueue()
    start = time.monotonic()
    q.add_after("a", 0.1)
    # Woken when the key is due (a worker that slept its whole timeout would get None).
    assert q.get(timeout=5) == "a"
    assert time.monotonic() - start >= 0.09


def test_wait_idle_waits_for_processing() -> None:
    q = WorkQueue()
    q.add("a")
    key = q.get(timeout=0)
    assert key == "a"
    assert q.wait_idle(0.05) is False
    threading.Timer(0.05, q.done, args=("a",)).start()
    assert q.wait_idle(5) is True


def test_recovery_resets_every_backoff_and_brings_retries_forward() -> None:
    # Given a long fault storm: many keys backed off to the 60 s cap,
    clock = FakeClock()
    q = WorkQueue(base_delay=0.1, max_delay=60.0, clock=clock, rng=lambda: 0.5)
    for _ in range(12):
        for key in ("a", "b", "c"):
            q.add_rate_limited(key)
        clock.now += 61  # each retry comes due, is processed and fails again
        for _ in range(3):
            key = q.get(timeout=0)
            assert key is not None
            q.done(key)
    for key in ("b", "c"):
        q.add_rate_limited(key)  # now due 60 s from now
    assert q.failures("b") == 13
    assert q.get(timeout=0) is None
    # when "a" succeeds (the API is back),
    q.forget("a", recovered=True)
    # then no key keeps its old backoff, and the pending retries are due within base_delay:
    assert q.failures("b") == q.failures("c") == 0
    clock.now += 0.1 * 1.5
    got = {q.get(timeout=0), q.get(timeout=0)}
    assert got == {"b", "c"}  # on main they were due 60 s later
    # and a new failure starts the backoff from the base again.
    assert q.add_rate_limited("b") == pytest.approx(0.1)


def test_a_success_without_earlier_failures_resets_nothing() -> None:
    clock = FakeClock()
    q = WorkQueue(base_delay=0.1, max_delay=60.0, clock=clock, rng=lambda: 0.5)
    for _ in range(5):
        q.add_rate_limited("b")
    q.forget("a", recovered=True)  # "a" never failed: no evidence the API came back
    assert q.failures("b") == 5


def test_while_several_keys_back_off_one_is_probed_every_interval() -> None:
    # Given: three keys failing long enough for their backoffs to reach the 60 s cap,
    clock = FakeClock()
    q = WorkQueue(base_delay=0.1, max_delay=60.0, clock=clock, rng=lambda: 0.5, probe_interval=2.0)
    for _ in range(12):
        delays = {key: q.add_rate_limited(key) for key in ("a", "b", "c")}
        clock.now += 61
        for _ in range(3):
            key = q.get(timeout=0)
            assert key is not None
            q.done(key)
    # when they fail once more, one of them (and only one) is retried after the probe interval,
    delays = {key: q.add_rate_limited(key) for key in ("a", "b", "c")}
    assert sorted(delays.values()) == [2.0, 60.0, 60.0]
    clock.now += 2.0
    probe = q.get(timeout=0)
    assert probe is not None and delays[probe] == 2.0
    assert q.get(timeout=0) is None  # the others still wait
    # and when the probe succeeds (the API is back), the others come forward at once.
    q.done(probe)
    q.forget(probe, recovered=True)
    clock.now += 0.1 * 1.5
    assert {q.get(timeout=0), q.get(timeout=0)} == {"a", "b", "c"} - {probe}


def test_a_single_failing_key_keeps_its_plain_backoff() -> None:
    q = WorkQueue(base_delay=1.0, max_delay=60.0, clock=FakeClock(), rng=lambda: 0.5)
    assert [q.add_rate_limited("a") for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
