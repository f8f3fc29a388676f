"""The executor's queue of ready calls: which one starts next when an in-flight slot frees.

Order:
1. Higher priority class first (objective.PRIORITY: latency 2, unknown 1, throughput 0).
2. Within a class, app-level fairness: round-robin over the apps that have ready items in it,
   the app served least recently first (an app never served counts as served when it joined).
   So interleaved apps all progress: a chain whose next step becomes ready goes before the
   100-map fan-out that was served since, and no app waits more than one turn of each other.
3. Within an app: deepest first, then FIFO. `depth` is the longest chain of producers above the
   call (computed by the executor): a deeper call is further along its app's DAG, closer to
   finishing the app and freeing what the app holds.

An item pushed with `app=None` is an app of its own (a lone request is treated as a one-call
app: it takes one turn in the rotation, it neither starves apps nor is starved by them).

Pushing an item that is already queued moves it to its new place (re-prioritised) and keeps
its arrival order. Every operation is O(log n) amortised (lazy deletion in the heaps).
Pure Python, no I/O, not thread-safe (the executor uses it from the event loop).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class _Entry:
    __slots__ = ("item", "priority", "app", "app_key", "depth", "seq", "live")

    def __init__(
        self, item: object, priority: int, app: str | None, app_key: object, depth: int, seq: int
    ) -> None:
        self.item, self.priority, self.app, self.app_key = item, priority, app, app_key
        self.depth, self.seq, self.live = depth, seq, True


class _AppBucket:
    """One app's ready items in one priority class: a heap of (-depth, seq, uid, entry), and
    the app's current turn in the class's rotation."""

    __slots__ = ("heap", "live", "turn")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, int, _Entry]] = []
        self.live = 0
        self.turn = -1  # uid of this bucket's live entry in _Class.turns


class _Class:
    """One priority class: its apps' buckets and a heap of turns (last served, uid, app key);
    a turn whose uid is not its bucket's current one is stale and skipped."""

    __slots__ = ("apps", "turns")

    def __init__(self) -> None:
        self.apps: dict[object, _AppBucket] = {}
        self.turns: list[tuple[int, int, object]] = []


class ReadyQueue(Generic[T]):
    """Ready items ordered by priority class, then by app (the app served least recently
    first), then deepest-first and FIFO within an app. Items must be hashable; each is queued
    at most once. `remember_apps` bounds how many apps' last service time is kept (an app
    forgotten is treated as new: it joins at the back of the rotation)."""

    def __init__(self, remember_apps: int = 4096) -> None:
        self._entries: dict[T, _Entry] = {}
        self._classes: dict[int, _Class] = {}
        self._served: OrderedDict[str, int] = OrderedDict()  # app -> clock at its last pop
        self._remember = remember_apps
        self._clock = itertools.count()  # arrivals, joins and services, in order
        self._uid = itertools.count()  # heap tie-break: entries never compare

    def push(self, item: T, *, priority: int, app: str | None, depth: int) -> None:
        """Queue `item`; if it is already queued, move it to its new place (its arrival order
        is kept, so a re-prioritised call does not lose its turn among its peers)."""
        old = self._entries.get(item)
        seq, app_key = next(self._clock), None
        if old is not None:
            if (old.priority, old.app, old.depth) == (priority, app, depth):
                return
            seq = old.seq
            if (old.priority, old.app) == (priority, app):
                app_key = old.app_key
                old.live = False  # same bucket: the app keeps its turn
                self._classes[priority].apps[app_key].live -= 1
            else:
                self._drop(old)
        if app_key is None:
            app_key = app if app is not None else object()  # app=None: an app of its own
        entry = _Entry(item, priority, app, app_key, depth, seq)
        self._entries[item] = entry
        cls = self._classes.get(priority)
        if cls is None:
            cls = self._classes[priority] = _Class()
        bucket = cls.apps.get(app_key)
        if bucket is None:  # joining the rotation: its turn is when it was last served
            bucket = cls.apps[app_key] = _AppBucket()
            last = self._served.get(app) if app is not None else None
            self._take_turn(cls, bucket, app_key, next(self._clock) if last is None else last)
        bucket.live += 1
        heapq.heappush(bucket.heap, (-depth, seq, next(self._uid), entry))

    def remove(self, item: T) -> bool:
        """Take `item` out; False if it was not queued."""
        entry = self._entries.get(item)
        if entry is None:
            return False
        self._drop(entry)
        return True

    def pop(self) -> T:
        """The next item to run (raises IndexError when empty)."""
        if not self._entries:
            raise IndexError("pop from an empty ReadyQueue")
        priority = max(self._classes)  # empty classes are deleted eagerly
        cls = self._classes[priority]
        while True:  # the live turn that comes first
            _, uid, app_key = heapq.heappop(cls.turns)
            bucket = cls.apps.get(app_key)
            if bucket is not None and bucket.turn == uid:
                break
        while True:
            *_, entry = heapq.heappop(bucket.heap)
            if entry.live:
                break
        entry.live = False
        bucket.live -= 1
        del self._entries[entry.item]
        now = next(self._clock)
        if entry.app is not None:
            self._served[entry.app] = now
            self._served.move_to_end(entry.app)
            if len(self._served) > self._remember:
                self._served.popitem(last=False)
        if bucket.live:
            self._take_turn(cls, bucket, app_key, now)  # served: behind every app waiting
        else:
            self._forget(priority, app_key)
        return entry.item  # type: ignore[return-value]

    def _take_turn(self, cls: _Class, bucket: _AppBucket, app_key: object, at: int) -> None:
        bucket.turn = next(self._uid)
        heapq.heappush(cls.turns, (at, bucket.turn, app_key))

    def _drop(self, entry: _Entry) -> None:
        """Unqueue `entry`: marked dead (its heap slot is skipped later), bucket count fixed."""
        del self._entries[entry.item]
        entry.live = False
        bucket = self._classes[entry.priority].apps[entry.app_key]
        bucket.live -= 1
        if not bucket.live:
            self._forget(entry.priority, entry.app_key)

    def _forget(self, priority: int, app_key: object) -> None:
        cls = self._classes[priority]
        del cls.apps[app_key]  # its turn in cls.turns is now stale
        if not cls.apps:
            del self._classes[priority]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item: object) -> bool:
        return item in self._entries

    def counts(self) -> dict[int, int]:
        """Queued items per priority class (for metrics: queue depth per objective)."""
        return {p: sum(b.live for b in c.apps.values()) for p, c in self._classes.items()}

    def __repr__(self) -> str:
        return f"ReadyQueue({len(self)} items, by priority {self.counts()})"
