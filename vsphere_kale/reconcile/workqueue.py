"""A keyed work queue with per-key backoff, as client-go's ``workqueue`` (rate-limiting flavour).

- **Deduplicated**: a key waiting in the queue is queued once, however often it is added.
- **One worker per key**: a key being processed is not handed out again; if it is added
  meanwhile it is marked dirty and re-queued when the worker calls :meth:`done`.
- **Delayed adds** (:meth:`add_after`) sit in a heap until due; the worker that calls
  :meth:`get` moves due keys into the queue, so no timer thread is needed.
- **Per-key exponential backoff** (:meth:`add_rate_limited`): ``base * 2**(failures-1)``,
  with +/-20 % jitter so a burst of failures does not retry in lock step, capped at
  ``max_delay``, and never sooner than a server's ``Retry-After``. :meth:`forget` resets it
  after a success.
- **Recovery** (:meth:`forget` with ``recovered=True``): when a key that had been failing
  succeeds, the API is evidently back, so every other key's backoff is reset and its pending
  retry brought forward to within ``base_delay`` (jittered). Without it, keys that reached
  the 60 s cap during a long fault storm waited out their cap after the faults ended
  (convergence ~47 s after recovery in the issue 10 review).
- **A probe** (``probe_interval``): the reset needs a first success, and with every key at
  the cap the first retry after an outage could still be up to a minute away (measured:
  ~20 s for 20 namespaces, tests/benchmarks/fault_recovery.py). So while several keys back
  off, one failing key at a time is retried after ``probe_interval`` instead of its backoff:
  at most one extra request per interval during an outage, and its end noticed within about
  that interval. A single failing key keeps its plain backoff.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable


class WorkQueue:
    def __init__(
        self,
        *,
        base_delay: float = 0.1,
        max_delay: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        probe_interval: float | None = 2.0,
    ) -> None:
        self._base = base_delay
        self._max = max_delay
        self._probe = probe_interval
        self._probe_due = float("-inf")
        """When the current probe (see the module) is due; past: no probe is scheduled."""
        self._clock = clock
        self._rng = rng
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = 0
        self._failures: dict[str, int] = {}
        self._shutdown = False

    # --- producers ---------------------------------------------------------------------------

    def add(self, key: str) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify_all()

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed (the earliest of several wins)."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            due = self._clock() + delay
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            self._seq += 1
            heapq.heappush(self._delayed, (due, self._seq, key))
            self._cond.notify_all()

    def add_rate_limited(self, key: str, *, retry_after: float | None = None) -> float:
        """Re-add after this key's backoff (or ``retry_after``, if longer); returns the delay."""
        with self._cond:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            exponent = min(failures - 1, 30)  # 2**30 * base is far past any cap: no overflow
            delay: float = self._base * float(2**exponent) * (0.8 + 0.4 * self._rng())
            delay = min(delay, self._max)
            if retry_after is not None:
                delay = max(delay, retry_after)  # the server said when; no probe before it
            elif self._probe is not None and delay > self._probe and len(self._failures) > 1:
                # Only while several keys fail (an outage, not one namespace's own error,
                # which keeps its plain backoff); at most one probe per interval.
                now = self._clock()
                if self._probe_due <= now:  # no probe pending: this key is the next one
                    delay = self._probe
                    self._probe_due = now + delay
        self.add_after(key, delay)
        return delay

    def forget(self, key: str, *, recovered: bool = False) -> None:
        """Reset ``key``'s backoff after a success. ``recovered``: the success followed
        failures (the API came back), so reset every key's backoff too (see the module)."""
        with self._cond:
            had_failed = self._failures.pop(key, None) is not None
            if recovered and had_failed and self._failures:
                self._reset_backoff_locked()

    def _reset_backoff_locked(self) -> None:
        now = self._clock()
        waiting = [k for k in self._failures if k in self._due]
        self._failures.clear()
        for key in waiting:
            due = now + self._base * (0.5 + self._rng())
            if self._due[key] <= due:
                continue
            self._due[key] = due
            self._seq += 1
            heapq.heappush(self._delayed, (due, self._seq, key))
        self._cond.notify_all()

    def failures(self, key: str) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    # --- consumers ---------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> str | None:
        """The next key (now owned by the caller until :meth:`done`), or None on shutdown or
        when ``timeout`` passes with nothing to do."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                wait = None if deadline is None else deadline - self._clock()
                if wait is not None and wait <= 0:
                    return None
                if self._delayed:
                    until_due = self._delayed[0][0] - self._clock()
                    wait = until_due if wait is None else min(wait, until_due)
                self._cond.wait(timeout=None if wait is None else max(wait, 0.0))

    def _promote_due_locked(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._due.get(key) != due:
                continue  # superseded by an earlier add_after
            del self._due[key]
            self._add_locked(key)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify_all()
            self._cond.notify_all()  # wake wait_idle()

    # --- lifecycle and introspection ----------------------------------------------------------

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def __len__(self) -> int:
        """Keys ready to be processed (the queue-depth metric)."""
        with self._cond:
            return len(self._queue)

    @property
    def delayed(self) -> int:
        with self._cond:
            return len(self._due)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued or being processed (delayed retries excluded)."""
        deadline = self._clock() + timeout
        with self._cond:
            while self._queue or self._processing:
                remaining = deadline - self._clock()
                if remaining <= 0 or self._shutdown:
                    return False
                self._cond.wait(timeout=min(remaining, 0.1))
            return True
