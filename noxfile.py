"""Developer sessions. They run in the current Python environment (no virtualenv per session):
installing torch with its CUDA libraries takes minutes, and every session needs the same set.

    nox -s tests   # the default test suite (what CI runs)
    nox -s lint    # ruff
    nox -s bench   # benchmarks that print figures
    nox -s slow    # end-to-end checks behind the `slow` marker
    nox -s demo    # the main job: reidbench reproduce masenet --scale smoke
    nox -s regress # regression suite vs the golden file (reidbench regress --suite ci --jobs 2)
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "none"


def _install(session: nox.Session) -> None:
    session.run("python", "-m", "pip", "install", "-q", "-e", ".[test]", external=True)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The default test suite."""
    _install(session)
    session.run("python", "-m", "pytest", "-q", *session.posargs, external=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff over the package, the tests, setup.py and this file."""
    _install(session)
    session.run("ruff", "check", "reidbench", "tests", "noxfile.py", "setup.py", external=True)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Evaluation/re-ranking, exact CPU re-ranking vs its baseline, trainer overhead and loader throughput."""
    _install(session)
    for target in ("eval", "rerank", "train", "data"):
        session.run("reidbench", "bench", target, *session.posargs, external=True)


@nox.session(venv_backend="none")
def slow(session: nox.Session) -> None:
    """Slow end-to-end checks (minutes): `pytest -m slow`."""
    _install(session)
    session.run("python", "-m", "pytest", "-q", "-m", "slow", *session.posargs, external=True)


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The main job on built-in synthetic data: reproduce MASENet at smoke scale, print the leaderboard."""
    _install(session)
    session.run("reidbench", "reproduce", "masenet", "--scale", "smoke", *session.posargs, external=True)


@nox.session(venv_backend="none")
def regress(session: nox.Session) -> None:
    """The regression suite against the committed golden file (`-- --suite small` for real data)."""
    _install(session)
    session.run("reidbench", "regress", *(session.posargs or ["--suite", "ci", "--jobs", "2"]), external=True)
