"""User errors: the one exception type the CLI turns into a single red line and exit code 2.

Library code raises :class:`ReidbenchError` (or a subclass) for expected problems with the user's
input: a missing file, an unknown name, a bad value. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

USER_ERROR_EXIT_CODE = 2


class ReidbenchError(Exception):
    """An expected user error: ``message`` names what was wrong and what was expected."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``name`` (case-insensitive), best first."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    prefix = [c for c in options if c.lower().startswith(name.lower()) and c.lower() not in matches]
    return [lowered[m] for m in matches] + prefix[: max(0, n - len(matches))]


class UnknownNameError(ReidbenchError):
    """A name (dataset, model, loss, command argument) that is not registered."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        options = sorted(choices)
        near = closest(name, options)
        hint = f"did you mean {', '.join(repr(c) for c in near)}?" if near else None
        known = ", ".join(options) if len(options) <= 12 else f"{len(options)} known names"
        super().__init__(f"unknown {kind} {name!r}; expected one of: {known}", hint)
        self.kind = kind
        self.name = name
        self.suggestions = near
