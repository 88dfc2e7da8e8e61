"""The last 24 hours, minute by minute: throughput, queue depth and time in queue, kept by the sidecar.

The task table keeps when each task finished, but not how deep a queue was an hour ago, so
the sidecar records it: every `TICK` seconds a thread reads what changed since its previous
reading and adds it to one ring of `MINUTES` slots per queue (and one for all queues):

- tasks finished per minute, by status: the rows whose ``finished_at`` lies in the window
  since the last reading (the finished index; the window ends `LAG` seconds before the
  database's clock, so a completion committed a moment after its timestamp is still counted).
  The first reading looks back the whole 24 hours, so the throughput chart is full at once;
- time in queue (``started_at - run_at``: from due to leased) of at most `WAIT_SAMPLES` of
  the tasks finished in the window, the newest first; p50 and p95 per minute. The first
  reading also takes `BACKFILL_WAITS` of each 5 minutes of the day before (a sample);
- depth (pending and running) per queue, from the sidecar's queue probe (the same reading
  as ``/metrics``, at most once a second whoever asks).

Depth is therefore known from the sidecar's start on (a restarted sidecar starts it again: the
table does not keep it); pages read this memory, never the table, so a chart costs no query.
Queues beyond ``max_queues`` (the busiest are named first) are summed under ``__other__``.
"""
from __future__ import annotations

import array
import dataclasses
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..metrics.database_gauges import OTHER
from .queries import DashboardReads, ReadTimeout

log = logging.getLogger("gta.dashboard")

MINUTES = 24 * 60
TICK = 10.0  # seconds between two readings
LAG = 2.0  # seconds the finished window stays behind the database's clock
WAIT_SAMPLES = 500  # most waits read per reading
BACKFILL_WAITS = 20  # waits read per 5 minutes of the day before the first reading
RECENT_THROUGHPUT = 5  # minutes the queues page's throughput covers
RECENT_WAITS = 15  # minutes the queues page's time-in-queue percentiles cover
ALL = ""  # the series of every queue together
FIELDS = ("succeeded", "failed", "pending", "running", "wait_p50", "wait_p95")
_DEPTH = ("pending", "running")
_WAITS = ("wait_p50", "wait_p95")


def epoch_minute(moment: dt.datetime) -> int:
    return math.floor(moment.timestamp() / 60)


def minute_of(text: str) -> int:
    """``YYYY-MM-DD HH:MM`` (UTC) → minutes since the epoch."""
    return epoch_minute(dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=dt.timezone.utc))


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (not empty)."""
    return values[min(len(values) - 1, max(0, math.ceil(share * len(values)) - 1))]


@dataclasses.dataclass(frozen=True)
class Reading:
    """What one reading found: finished counts ``(minute, queue, status, count)``, waits
    ``(minute, queue, seconds)``, depth ``{(queue, status): count}``, at the database's time
    ``at`` (seconds since the epoch)."""

    at: float
    finished: Sequence[tuple[int, str, str, int]] = ()
    waits: Sequence[tuple[int, str, float]] = ()
    depth: Mapping[tuple[str, str], int] | None = None


@dataclasses.dataclass(frozen=True)
class Chart:
    """One queue's last `MINUTES` minutes, oldest first; None where nothing was recorded."""

    first: int  # the epoch minute of the first value
    values: Mapping[str, list[float | None]]
    recorded_since: int | None  # the first minute depth was recorded (None: never)


@dataclasses.dataclass(frozen=True)
class Recent:
    """A queue's last few minutes: tasks finished per minute, time-in-queue percentiles."""

    succeeded_per_minute: float
    failed_per_minute: float
    wait_p50: float | None
    wait_p95: float | None
    waits: int  # how many waits the percentiles are of


class TableReader:
    """A `History` reading from the task table: four statements (the clock, finished counts and
    waits on the finished index, depth on the pending and running rows' indexes)."""

    def __init__(self, reads: DashboardReads) -> None:
        self.reads = reads
        self._mark: dt.datetime | None = None  # where the previous window ended
        self._backfill = True  # the first window: the last 24 hours

    def __call__(self) -> Reading:
        try:
            return self._read()
        except ReadTimeout:
            if not self._backfill:
                raise
            log.warning("dashboard history: counting the last 24 hours' finished tasks took too long; "
                        "the throughput chart starts now")
            self._backfill = False
            return self._read()

    def _read(self) -> Reading:
        with self.reads.session() as reads:
            now = reads.now()
            until = now - dt.timedelta(seconds=LAG)
            back = dt.timedelta(minutes=MINUTES) if self._backfill else dt.timedelta(seconds=TICK)
            since = self._mark or until - back
            finished = reads.finished_counts(since, until)
            recent = max(since, until - dt.timedelta(minutes=RECENT_WAITS))
            waits = reads.wait_samples(recent, until, WAIT_SAMPLES)
            if self._backfill:  # a few waits of every 5 minutes before: one short walk of the index each
                step = dt.timedelta(minutes=5)
                for end in (recent - step * index for index in range((MINUTES - RECENT_WAITS) // 5)):
                    waits += reads.wait_samples(end - step, end, BACKFILL_WAITS)
            depth = {(queue, status): getattr(counts, status) for queue, counts in reads.queue_depth().items()
                     for status in _DEPTH}
        self._mark, self._backfill = until, False
        return Reading(now.timestamp(),
                       [(minute_of(bucket), queue, status, count) for bucket, queue, status, count in finished],
                       [(minute_of(bucket), queue, wait) for bucket, queue, wait in waits], depth)


class _Ring:
    """A queue's minutes: slot ``m % MINUTES`` holds minute ``m`` when its stamp says so."""

    def __init__(self) -> None:
        self.stamps = array.array("q", [-1] * MINUTES)
        self.values = {field: array.array("d", [math.nan] * MINUTES) for field in FIELDS}

    def slot(self, minute: int) -> int:
        index = minute % MINUTES
        if self.stamps[index] != minute:
            self.stamps[index] = minute
            for field in FIELDS:
                self.values[field][index] = math.nan
        return index

    def add(self, minute: int, field: str, amount: float) -> None:
        index = self.slot(minute)
        value = self.values[field][index]
        self.values[field][index] = amount if math.isnan(value) else value + amount

    def set(self, minute: int, field: str, value: float) -> None:
        self.values[field][self.slot(minute)] = value

    def get(self, minute: int, field: str) -> float | None:
        index = minute % MINUTES
        value = self.values[field][index]
        return None if self.stamps[index] != minute or math.isnan(value) else value


class History:
    """The rings and the readings that fill them; `start` runs the readings on a thread."""

    def __init__(self, read: Callable[[], Reading], max_queues: int) -> None:
        #: one reading: what changed since the previous one (see `TableReader`)
        self._read = read
        self.max_queues = max_queues
        self._lock = threading.Lock()
        self._rings: dict[str, _Ring] = {ALL: _Ring()}
        self._waits: dict[tuple[int, str], list[float]] = {}  # raw waits of the last minutes
        self._now: int | None = None
        self._at = 0.0
        #: counts the readings recorded: what was drawn from an older version is stale
        self.version = 0
        self._recorded_since: int | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0

    # -- filling ---------------------------------------------------------------------------
    def start(self) -> None:
        """Read now and then every `TICK` seconds, on a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gta-dashboard-history", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            began = time.monotonic()
            self.tick()
            time.sleep(max(0.0, TICK - (time.monotonic() - began)))

    def tick(self) -> None:
        """One reading, recorded; a failed one is logged (once per run of failures) and skipped."""
        try:
            reading = self._read()
        except Exception as exc:  # the next reading tries again: a chart gap, never a dead thread
            self._failures += 1
            if self._failures == 1:
                log.warning("dashboard history: a reading failed (%s); retrying every %gs", exc, TICK)
            return
        self._failures = 0
        self.record(reading)

    def record(self, reading: Reading) -> None:
        now = math.floor(reading.at / 60)
        with self._lock:
            self._now, self._at = now, reading.at
            self.version += 1
            for minute, queue, status, count in reading.finished:
                if status in ("succeeded", "failed"):
                    for ring in self._rings_of(queue):
                        ring.add(minute, status, count)
            touched = set()
            for minute, queue, wait in reading.waits:
                for name in {ALL, self._name(queue)}:
                    self._waits.setdefault((minute, name), []).append(wait)
                    touched.add((minute, name))
            for minute, name in touched:
                waits = sorted(self._waits[minute, name])
                ring = self._ring(name)
                ring.set(minute, "wait_p50", percentile(waits, 0.5))
                ring.set(minute, "wait_p95", percentile(waits, 0.95))
            for key in [key for key in self._waits if key[0] <= now - RECENT_WAITS]:
                del self._waits[key]
            if reading.depth is not None:
                self._record_depth(now, reading.depth)

    def _record_depth(self, minute: int, depth: Mapping[tuple[str, str], int]) -> None:
        if self._recorded_since is None:
            self._recorded_since = minute
        totals: dict[str, dict[str, float]] = {ALL: dict.fromkeys(_DEPTH, 0.0)}
        for (queue, status), count in sorted(depth.items(), key=lambda item: -item[1]):
            if status in _DEPTH:
                for name in {ALL, self._name(queue)}:
                    totals.setdefault(name, dict.fromkeys(_DEPTH, 0.0))[status] += count
        for name, ring in self._rings.items():  # a queue now empty is a 0, not a gap
            for status in _DEPTH:
                ring.set(minute, status, totals.get(name, {}).get(status, 0.0))

    def _name(self, queue: str) -> str:
        if queue in self._rings or len(self._rings) <= self.max_queues:
            return queue
        return OTHER

    def _ring(self, name: str) -> _Ring:
        ring = self._rings.get(name)
        if ring is None:
            ring = self._rings[name] = _Ring()
        return ring

    def _rings_of(self, queue: str) -> Iterable[_Ring]:
        return (self._rings[ALL], self._ring(self._name(queue)))

    # -- reading ----------------------------------------------------------------------------
    @property
    def now(self) -> int | None:
        """The database's minute at the latest reading (None before the first)."""
        return self._now

    def chart(self, queue: str = ALL) -> Chart | None:
        """The queue's last 24 hours (``ALL``: every queue), or None before the first reading."""
        with self._lock:
            if self._now is None:
                return None
            first = self._now - MINUTES + 1
            ring = self._rings.get(queue)
            values: dict[str, list[float | None]] = {
                field: [ring.get(minute, field) if ring else None for minute in range(first, self._now + 1)]
                for field in FIELDS}
            return Chart(first, values, self._recorded_since)

    def recent(self, queue: str = ALL) -> Recent | None:
        """The queue's throughput over the last `RECENT_THROUGHPUT` minutes (this one so far
        included) and its time-in-queue percentiles over the last `RECENT_WAITS`; None before
        the first reading."""
        with self._lock:
            if self._now is None:
                return None
            ring = self._rings.get(queue)
            minutes = range(self._now - RECENT_THROUGHPUT + 1, self._now + 1)
            span = RECENT_THROUGHPUT - 1 + max(LAG, self._at - self._now * 60 - LAG) / 60
            done = {status: sum(ring.get(minute, status) or 0.0 for minute in minutes) / span if ring else 0.0
                    for status in ("succeeded", "failed")}
            waits = sorted(wait for (minute, name), values in self._waits.items() if name == queue
                           for wait in values if minute > self._now - RECENT_WAITS)
        return Recent(done["succeeded"], done["failed"],
                      percentile(waits, 0.5) if waits else None, percentile(waits, 0.95) if waits else None,
                      len(waits))
