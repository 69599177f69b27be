"""The job's progress bar: input records handled (explained, failed or skipped), with a status line
of queries sent, their rate, fits in progress, dollars spent and replica deaths."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm  # a widget in a notebook

from pipelines.summary import JobSummary


class Progress:
    """A context manager around the bar; ``handled`` counts the records done in this run."""

    def __init__(self, total: int, enabled: bool, begin: float) -> None:
        """``begin``: the run's ``time.monotonic()`` start, for the query rate."""
        self.total = total
        self.handled = 0
        self._begin = begin
        self._bar = tqdm(total=total, unit="ex", desc="spex-ray", file=sys.stderr, disable=not enabled,
                         dynamic_ncols=True, miniters=0)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.close()

    def advance(self) -> None:
        """One more input record is done."""
        self.handled += 1
        self._bar.update(1)

    def show(self, summary: JobSummary, fitting: int, spent_usd: float | None, losses: str) -> None:
        """Refresh the status line (``spent_usd`` None: the backend is not charged)."""
        rate = summary.queries_sent / max(time.monotonic() - self._begin, 1e-9)
        status = f"{summary.queries_sent:,} queries, {rate:,.0f} q/s, {fitting} fitting"
        if spent_usd is not None:
            status += f", ${spent_usd:,.4f} spent"
        self._bar.set_postfix_str(status + losses, refresh=False)
        self._bar.update(0)  # redraws the queries at most every mininterval, between examples too
