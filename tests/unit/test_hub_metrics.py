"""The hub's metrics over its store's moves (pure parts, and the exposition of a list of moves)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prometheus_client import CollectorRegistry, generate_latest

from hub_client.metrics import FROZEN_BUCKETS, MoveCollector, histogram
from hub_client.store.models import Move

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def test_histogram_is_cumulative_with_inf() -> None:
    buckets, total = histogram([0.2, 1.0, 1.4, 7.0, 400.0], FROZEN_BUCKETS)
    counts = dict(buckets)
    assert counts["0.25"] == 1 and counts["1.0"] == 2 and counts["1.5"] == 3 and counts["10.0"] == 4
    assert counts["300.0"] == 4 and counts["+Inf"] == 5
    assert total == 0.2 + 1.0 + 1.4 + 7.0 + 400.0
    assert histogram([], (1.0,)) == ([("1.0", 0), ("+Inf", 0)], 0.0)


def move(status: str, seconds: float | None, caught: int | None = None) -> Move:
    frozen = T0 if seconds is not None else None
    placed = T0 + timedelta(seconds=seconds) if seconds is not None else None
    return Move("m", "p", "a", "b", "x", status, False, None, 1, T0, T0, frozen_at=frozen, placed_at=placed,
                caught_up_bytes=caught)


def test_collector_counts_completed_frozen_moves_only() -> None:
    registry = CollectorRegistry()
    registry.register(MoveCollector(lambda: [move("succeeded", 1.2, 10 << 20), move("succeeded", 40.0, 1 << 30),
                                             move("succeeded", None), move("running", None),
                                             move("failed", None)]))
    text = generate_latest(registry).decode()
    assert 'buckets_move_frozen_seconds_bucket{le="1.5"} 1.0' in text
    assert 'buckets_move_frozen_seconds_bucket{le="+Inf"} 2.0' in text
    assert "buckets_move_frozen_seconds_count 2.0" in text
    assert "buckets_move_frozen_seconds_sum 41.2" in text
    sums = dict(line.split(" ") for line in text.splitlines() if line.startswith("buckets_move_caught_up_bytes_sum"))
    assert float(sums["buckets_move_caught_up_bytes_sum"]) == (10 << 20) + (1 << 30)
    assert 'buckets_moves{status="succeeded"} 3.0' in text and 'buckets_moves{status="cancelled"} 0.0' in text
    assert 'buckets_moves{status="running"} 1.0' in text
