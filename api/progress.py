"""Progress of a running job: phase and bytes, shared by worker threads and observers."""

from __future__ import annotations

import threading
from typing import Protocol


class ProgressView(Protocol):
    """Something that shows progress (a terminal bar, plain log lines)."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, done: int, total: int | None) -> None: ...


class Tracker:
    """Counts bytes done in the current phase (each phase starts at 0); thread-safe."""

    def __init__(self, views: list[ProgressView] | None = None) -> None:
        self._lock = threading.Lock()
        self._views = list(views or [])
        self.phase_name: str | None = None
        self.done = 0
        self.total: int | None = None

    def phase(self, name: str, total: int | None = None) -> None:
        with self._lock:
            self.phase_name = name
            self.done = 0
            self.total = total
        for view in self._views:
            view.phase(name, total)

    def advance(self, amount: int) -> None:
        with self._lock:
            self.done += amount
            done, total = self.done, self.total
        for view in self._views:
            view.advance(done, total)

    def snapshot(self) -> tuple[str | None, int, int | None]:
        with self._lock:
            return self.phase_name, self.done, self.total
