"""The job's queues in front of its executor: target calls, batches and fits waiting to go, and
how many examples may be open at once (no Ray).

Examples are taken in while fewer than ``2 * num_actors + 2`` are open (scored, waiting for
their target, or with adaptive budgets waiting for a stage's fit) and fewer than
``max(1, num_actors)`` fits wait; calls whose replica died go back to the front of their queue;
target calls go before batches (an example scores only once its target is in); at most
``max(1, num_actors)`` fits run at once.
"""

from __future__ import annotations

from collections import deque

from pipelines.calls import Batch, FitCall, TargetCall
from pipelines.executor import Executor


class Scheduler:
    """Queues of target calls, batches and fits, handed to an executor as it has room."""

    def __init__(self, num_actors: int) -> None:
        self.max_open = 2 * num_actors + 2
        self.max_fits = max(1, num_actors)
        self.targets: deque[TargetCall] = deque()
        self.batches: deque[Batch] = deque()
        self.fit_backlog: deque[FitCall] = deque()
        self.fits_running = 0

    def admits(self, open_examples: int) -> bool:
        """Whether one more example may be taken in."""
        return open_examples < self.max_open and len(self.fit_backlog) < self.max_fits

    @property
    def fitting(self) -> int:
        """Fits running or waiting."""
        return self.fits_running + len(self.fit_backlog)

    def dispatch(self, executor: Executor, *, sending: bool) -> None:
        """Hand the executor what it has room for; with ``sending`` False (the job is stopping),
        drop every queued call instead. Fits go on either way."""
        if sending:
            while executor.retry:
                call = executor.retry.pop()
                (self.targets if isinstance(call, TargetCall) else self.batches).appendleft(call)
            while self.targets and executor.has_capacity():
                executor.submit(self.targets.popleft())
            while self.batches and executor.has_capacity():
                executor.submit(self.batches.popleft())
        else:
            executor.retry.clear()
            self.targets.clear()
            self.batches.clear()
        while self.fit_backlog and self.fits_running < self.max_fits:
            executor.submit_fit(self.fit_backlog.popleft())
            self.fits_running += 1

    def fitted(self) -> None:
        """A fit came back."""
        self.fits_running -= 1
