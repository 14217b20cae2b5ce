"""Developer sessions: ``nox`` runs tests, lint and typecheck; ``nox -s bench`` the benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (benchmarks skipped)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the kernel and the built-in plugins."""
    session.install("-e", ".[dev]")
    session.run("mypy", "doll_core", "plugins")


@nox.session
def bench(session: nox.Session) -> None:
    """pytest-benchmark: the benchmarks under tests/benchmarks."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "tests/benchmarks", "--benchmark-only", *session.posargs)
