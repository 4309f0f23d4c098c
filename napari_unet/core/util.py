"""Small helpers shared by the core modules."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from .events import Notice  # noqa: F401 - re-exported (it used to live here)

R = TypeVar("R")


def drain(gen: Generator[Any, Any, R], on_event: Callable[[Any], None] | None = None) -> R:
    """Run a generator to its end, passing each event to ``on_event``; return its return value."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(ev)
