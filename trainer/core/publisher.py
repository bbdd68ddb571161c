"""Publishing steps off the training thread: one background thread fed by a bounded queue.

What a step costs the training loop is what runs on its thread. Reading a step's numbers,
laying them out, encoding, sending them to monitors, keeping them for late joiners and
recording them is host work that needs nothing from the loop once the step's tensors
exist, so the probe hands each step to a :class:`StepPublisher` (one ``deque.append``)
and a daemon thread does that work, in order, a few milliseconds later.

- **Every step, in order.** Items are handled in the order they were submitted, by one
  thread at a time (:meth:`StepPublisher.drain` lets the caller do the pending work itself,
  under the same lock: flushing, an event that must follow the steps before it, close).
- **Never blocks, never raises into the loop.** The queue is bounded
  (``MAX_PENDING_STEPS``); when full, a step is dropped and counted (:attr:`dropped`), and
  ``on_dropped`` is told the count so the run can say so. A handler that raises is counted
  (:attr:`failures`) and reported through ``on_error``; the thread goes on with the next item.
- **Cheap to wake.** An idle thread sleeps until a step comes (one ``Event.set``), then
  lets ``interval_s`` pass for more to gather (less if ``WAKE_AT`` items wait) and handles
  them all at once; while steps keep coming it goes on gathering without being woken, so
  a fast loop pays no per-step notification and a slow one no idle wake-ups. A monitor
  sees a step about ``interval_s`` after it ended.
- **Honest about its cost.** :attr:`cpu_s` is the CPU time spent handling items (on
  whichever thread handled them), :attr:`handled` how many: benchmarks print both.
- **Fork-safe.** A forked child (a DataLoader worker) gets no thread of the parent's; if
  it submits anything, it handles the item at once on its own thread.

Crash loss: a SIGKILL loses what was queued and not yet handled (at most ``interval_s``
of steps, normally well under one) on top of what the recording had not yet written.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

PUBLISH_INTERVAL_S = 0.005  # the publisher thread handles pending steps this often
WAKE_AT = 64  # ... or as soon as this many wait (a fast loop: bounded batches)
MAX_PENDING_STEPS = 16384  # queued and not yet handled: beyond this, steps are dropped and counted

_RUNNING: weakref.WeakSet[StepPublisher] = weakref.WeakSet()
_AT_EXIT: list[bool] = []


def _drain_all() -> None:
    """At interpreter exit: publish what is pending (a loop that never called close() keeps its
    last steps). Registered when the first publisher thread starts, after the link and its
    recording exist, so it runs before the recording's own exit hook closes the file."""
    for publisher in list(_RUNNING):
        try:
            publisher.drain()
        except Exception:  # exiting: nothing left to tell
            pass


class StepPublisher:
    """Calls ``handle(items)`` with every submitted item, in order, on a background thread.

    ``handle`` gets the items pending at a wake-up as one list (at most ``batch`` of them),
    so that their work can be done with array operations over all of them at once.
    ``on_error(text)`` is told a failure of ``handle`` (once per failure, with the
    exception: the items of that call are counted in :attr:`failed_items`); ``on_dropped(count)`` the total of items dropped so far when new drops
    happened (called from the handling thread, before the next item is handled).
    ``background=False`` handles every item at once on the submitting thread (the
    behaviour without a publisher).
    """

    def __init__(self, handle: Callable[[list[Any]], None], *, on_error: Callable[[str], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None, interval_s: float = PUBLISH_INTERVAL_S,
                 max_pending: int = MAX_PENDING_STEPS, background: bool = True, batch: int = 256,
                 name: str = "octa-publisher") -> None:
        if not interval_s > 0 or max_pending < 1:
            raise ValueError(f"interval_s must be > 0 and max_pending >= 1, got {interval_s!r}, {max_pending!r}")
        self.handle = handle
        self.on_error = on_error
        self.on_dropped = on_dropped
        self.interval_s = float(interval_s)
        self.max_pending = int(max_pending)
        self.background = bool(background)
        self.batch = max(1, int(batch))
        self.name = name
        self.dropped = 0
        self.failures = 0
        self.failed_items = 0
        self.handled = 0
        self.submitted = 0
        self.cpu_s = 0.0
        self._dropped_told = 0
        self._pending: deque[Any] = deque()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = False  # the thread waits for a first item (a submit wakes it)
        self._pid = os.getpid()
        self._closed = False
        self._local = threading.local()  # .draining: this thread is inside drain()

    # --- the training thread's side --------------------------------------------------------

    def submit(self, item: Any) -> bool:
        """Queue one item (never blocks); False when it was dropped (queue full, or closed)."""
        if self._pid != os.getpid():
            self._after_fork()
        pending = self._pending
        if self._closed or not self.background:
            if self._closed:
                self.dropped += 1
                return False
            pending.append(item)
            self.submitted += 1
            self.drain()
            return True
        if len(pending) >= self.max_pending:
            self.dropped += 1
            self._wake.set()
            return False
        pending.append(item)
        self.submitted += 1
        if self._thread is None:
            self._start()
        elif self._idle or len(pending) >= WAKE_AT:
            self._wake.set()
        return True

    def report_failure(self, text: str, items: int = 1) -> None:
        """A handler says that ``items`` of its items could not be handled (counted, reported)."""
        self.failures += 1
        self.failed_items += items
        self._report(self.on_error, text)

    @property
    def pending(self) -> int:
        """Items submitted and not yet handled (queued, or being handled now)."""
        return self.submitted - self.handled

    def drain(self) -> None:
        """Handle everything pending now, on the calling thread (in order, after what the
        publisher thread is handling). Inside a handler (re-entered) it does nothing."""
        if getattr(self._local, "draining", False):
            return
        with self._lock:
            self._local.draining = True
            try:
                self._handle_pending()
            finally:
                self._local.draining = False

    def close(self) -> None:
        """Handle everything pending, then stop the thread. Idempotent; later items are dropped."""
        if self._closed:
            return
        self.drain()
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join()
        self.drain()  # anything submitted while it stopped

    # --- the publisher thread ---------------------------------------------------------------

    def _start(self) -> None:
        _RUNNING.add(self)
        if not _AT_EXIT:
            _AT_EXIT.append(True)
            atexit.register(_drain_all)
        thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        """Sleep until a step comes (no wake-ups while the loop is elsewhere), give it
        ``interval_s`` for more to gather (cut short by ``WAKE_AT`` waiting, or close), handle
        them all; go on gathering while steps keep coming."""
        wake = self._wake
        while not self._closed:
            self._idle = True  # first say so, then look: a submit in between sees it and wakes us
            if not self._pending and self.dropped == self._dropped_told:
                wake.wait()
                wake.clear()
            self._idle = False
            if self._closed:
                break
            wake.wait(self.interval_s)
            wake.clear()
            self.drain()

    def _handle_pending(self) -> None:
        """Handle every pending item (lock held): timed, failures caught and reported."""
        pending = self._pending
        if not pending and self.dropped == self._dropped_told:
            return
        start = time.thread_time()
        handle = self.handle
        try:
            while True:
                if self.dropped != self._dropped_told:
                    self._dropped_told = self.dropped
                    self._report(self.on_dropped, self._dropped_told)
                if not pending:
                    break
                popleft = pending.popleft
                items = [popleft() for _ in range(min(len(pending), self.batch))]
                try:
                    handle(items)
                except Exception as exc:  # never into the loop: counted and reported
                    self.failures += 1
                    self.failed_items += len(items)
                    self._report(self.on_error, f"{type(exc).__name__}: {exc}")
                self.handled += len(items)
        finally:
            self.cpu_s += time.thread_time() - start

    @staticmethod
    def _report(callback: Callable[[Any], None] | None, value: Any) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:  # reporting a problem must not become another one
            pass

    def _after_fork(self) -> None:
        """In a forked child: no publisher thread, fresh locks; items are handled at once."""
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._local = threading.local()
        self._pending = deque()
        self.submitted = self.handled  # what the parent had queued is the parent's
        self._thread = None
        self.background = False
