"""What the API fuzzer (tests/integration/test_fuzz_api.py) tried, for the terminal summary.

The fuzzer records every call here (method → status code name → count) and the final state of
every operation it started; the table is registered with :mod:`tests.summaries`, which prints it
after the run (also from a pytest-xdist worker; CI does not use ``pytest -s``).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from tests import summaries

CODES: defaultdict[str, Counter] = defaultdict(Counter)
# (operation kind, final state, error code) → count, of the operations the fuzzer started.
OPERATIONS: Counter = Counter()
SECONDS: dict[str, float] = {}


def record(method: str, code: str) -> None:
    CODES[method][code] += 1


def summary_lines() -> list[str]:
    """The table, one line per RPC, then the operations' outcomes; [] when the fuzzer did not run."""
    if not CODES:
        return []
    total = sum(sum(codes.values()) for codes in CODES.values())
    seconds = sum(SECONDS.values())
    lines = [f"{total} cases against a live agent in {seconds:.1f} s"]
    width = max(len(method) for method in CODES)
    for method, codes in CODES.items():
        cases = sum(codes.values())
        seen = ", ".join(f"{code} {count}" for code, count in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"  {method:<{width}} {cases:>5}  {SECONDS.get(method, 0.0):5.1f} s  {seen}")
    if OPERATIONS:
        lines.append("operations started by the fuzzer, by final state:")
        for (kind, state, code), count in sorted(OPERATIONS.items()):
            lines.append(f"  {kind:<22} {state:<24} {code or '-':<20} {count}")
    return lines


def _section() -> tuple[str, list[str]] | None:
    lines = summary_lines()
    return ("API fuzzing (hypothesis, tests/integration/test_fuzz_api.py)", lines) if lines else None


summaries.register(_section)
