"""The hub's Prometheus metrics, computed from its store at each scrape.

The store is the record (moves with their frozen window, see :class:`hub_client.store.Move`), so
the metrics are a view of it: nothing is counted in memory that a hub restart would lose, and two
hub processes on one store report the same numbers. :func:`hub_registry` builds a private
registry (never prometheus_client's global one); :func:`exposition` renders it as the text
format, which ``buckets metrics`` prints and the hub service serves.

Series:

* ``buckets_move_frozen_seconds`` (histogram): per completed move that froze its source, seconds
  from the freeze step's start to placement;
* ``buckets_move_caught_up_bytes`` (histogram): per such move, the bytes fetched after the freeze
  (the catch-up restore's; plus the final repository sync's copied bytes when cross-region);
* ``buckets_moves`` (gauge): moves by status, every status present (0 included).
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from hub_client.store import Move, MoveStatus, Store

# A move's frozen window is seconds for a pre-copied move and grows with the project without
# one (about 4 s per GB measured before issue 18): buckets around the 1.5 s target, then up.
FROZEN_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
# Caught-up bytes: from a few KiB (a quiet project) to the whole project (no pre-copy).
BYTES_BUCKETS = tuple(float(1 << shift) for shift in range(10, 41, 3))  # 1 KiB … 1 TiB


def histogram(values: Iterable[float], bounds: Sequence[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets (``le`` label → count, ending with ``+Inf``) and the sum of
    ``values`` over the ascending upper ``bounds``."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
        total += value
    buckets, running = [], 0
    for bound, count in zip([*(repr(float(b)) for b in bounds), "+Inf"], counts):
        running += count
        buckets.append((bound, running))
    return buckets, total


class MoveCollector(Collector):
    """The move series, from ``moves()`` (every move in the store) at each scrape."""

    def __init__(self, moves: Callable[[], Iterable[Move]]) -> None:
        self._moves = moves

    def collect(self) -> Iterator[HistogramMetricFamily | GaugeMetricFamily]:
        moves = list(self._moves())
        frozen = [m for m in moves if m.status == MoveStatus.SUCCEEDED and m.frozen_seconds is not None]
        buckets, total = histogram((m.frozen_seconds for m in frozen), FROZEN_BUCKETS)
        yield HistogramMetricFamily("buckets_move_frozen_seconds",
                                    "Completed moves' frozen windows: freeze step start to placement, seconds.",
                                    buckets=buckets, sum_value=total)
        caught = [float(m.caught_up_bytes) for m in frozen if m.caught_up_bytes is not None]
        buckets, total = histogram(caught, BYTES_BUCKETS)
        yield HistogramMetricFamily("buckets_move_caught_up_bytes",
                                    "Completed moves' bytes fetched after the freeze (catch-up restore, plus the "
                                    "final repository sync of a cross-region move).",
                                    buckets=buckets, sum_value=total)
        counts = collections.Counter(m.status for m in moves)
        family = GaugeMetricFamily("buckets_moves", "Moves in the hub's store, by status.", labels=["status"])
        for status in sorted(MoveStatus.ALL):
            family.add_metric([status], counts.get(status, 0))
        yield family


def hub_registry(store: Store) -> CollectorRegistry:
    """A private registry with the hub's collectors over ``store``."""
    registry = CollectorRegistry()
    registry.register(MoveCollector(store.list_moves))
    return registry


def exposition(store: Store) -> str:
    """The hub's metrics in the Prometheus text format."""
    return generate_latest(hub_registry(store)).decode()
