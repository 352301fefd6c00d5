"""A bounded in-memory queue of rows for the feedback store, written by a thread of its own in batches.

The request path only appends (a lock held for a list append): it never waits for the database. When the
queue is full, new rows are dropped and counted rather than blocking or growing without bound. A batch that
fails for a transient reason (database down, restarting, busy) stays at the head and is retried with backoff,
so an outage shorter than the buffer loses nothing; any other failure drops that batch.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_BACKOFF_S = 2.0  # the longest a returning database waits for the first retry


@dataclass(frozen=True)
class Entry:
    seq: int
    rows: int
    item: Any


class WriteBuffer:
    def __init__(self, write: Callable[[Sequence[Any]], None], *, capacity_rows: int, batch_rows: int,
                 interval_s: float, transient: Callable[[BaseException], bool],
                 on_error: Callable[[BaseException], None], on_dropped: Callable[[str, int], None],
                 on_depth: Callable[[int], None] = lambda rows: None) -> None:
        self._write, self._transient = write, transient
        self._on_error, self._on_dropped, self._on_depth = on_error, on_dropped, on_depth
        self.capacity_rows, self.batch_rows, self.interval_s = capacity_rows, batch_rows, interval_s
        self._queue: collections.deque[Entry] = collections.deque()
        self._rows = 0
        self._seq = 0     # of the last entry accepted
        self._done = 0    # every entry up to this one is written or given up
        self._urgent = False
        self._failing = False
        self._stopping = False
        self._abandoned = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self._thread.start()

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def failing(self) -> bool:
        """The last write failed and is being retried."""
        return self._failing

    def put(self, item: Any, rows: int) -> int | None:
        """Queue `item` (`rows` rows) for writing; its sequence number for flush(upto=), or None if it was
        dropped because the buffer is full."""
        with self._cond:
            if self._stopping or self._rows + rows > self.capacity_rows:
                accepted = False
            else:
                if not self._queue or self._rows + rows >= self.batch_rows:
                    self._cond.notify_all()  # the writer sleeps until there is something, then a batch fills
                self._seq += 1
                self._queue.append(Entry(self._seq, rows, item))
                self._rows += rows
                accepted = True
            seq = self._seq
        if not accepted:
            self._on_dropped("buffer_full", rows)
            return None
        return seq

    def flush(self, timeout_s: float, upto: int | None = None) -> bool:
        """Wait (bounded) until everything queued before this call (or up to entry `upto`) is written. Returns at
        once, False, while the database is failing: callers then fail fast instead of waiting out the outage."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._seq if upto is None else upto
            if not self._failing:  # while failing, the writer keeps its backoff
                self._urgent = True
                self._cond.notify_all()
            while self._done < target and not self._failing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._done >= target

    def close(self, timeout_s: float) -> int:
        """Write what is queued (bounded by `timeout_s`), stop the thread; returns the rows left unwritten."""
        with self._cond:
            self._stopping = self._urgent = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        with self._cond:
            left, self._rows, self._abandoned = self._rows, 0, True
            self._queue.clear()
            self._done = self._seq
            self._cond.notify_all()
        if left:
            self._on_dropped("shutdown", left)
        return left

    def _take(self) -> list[Entry] | None:
        """The next batch: waits for a full batch, the interval, a flush or the stop."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._urgent = False
                self._cond.wait()
            if not self._urgent and self._rows < self.batch_rows:
                self._cond.wait(self.interval_s)
            batch, rows = [], 0
            while self._queue and (not batch or rows + self._queue[0].rows <= self.batch_rows):
                entry = self._queue.popleft()
                batch.append(entry)
                rows += entry.rows
            return batch

    def _run(self) -> None:
        backoff = 0.0
        while (batch := self._take()) is not None:
            try:
                self._write([e.item for e in batch])
                error: BaseException | None = None
            except Exception as exc:  # the writer must outlive any database error
                error = exc
                self._on_error(exc)
            rows = sum(e.rows for e in batch)
            with self._cond:
                if self._abandoned:  # close() gave up waiting and counted these rows already
                    return
                retry = error is not None and self._transient(error)
                if retry:
                    self._queue.extendleft(reversed(batch))
                else:
                    self._rows -= rows
                    self._done = batch[-1].seq
                self._failing = retry
                self._cond.notify_all()
                self._on_depth(self._rows)
                if retry:
                    backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
                    self._cond.wait(backoff)  # a flush or close cuts the wait short
                else:
                    backoff = 0.0
            if error is not None and not retry:
                self._on_dropped("store_error", rows)
