"""Start-up cost of plugin discovery (every ``doll`` command pays it once).

Run with ``nox -s bench`` or ``python -m pytest tests/benchmarks --benchmark-only``.
"""

from __future__ import annotations

from typing import Any

from doll_core.registry import Registry


def test_bench_registry_from_entry_points(benchmark: Any) -> None:
    registry = benchmark(Registry.from_environment)
    assert len(registry.plugins()) >= 8
