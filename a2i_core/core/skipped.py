"""Rows a source skips: counted by reason for the stage's metrics, the first few named in the log.

Metadata files are untrusted: a bad row is reported and skipped, never the end of a stage, and 10,000 bad rows are
not 10,000 log lines.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger(__name__)
MAX_WARNINGS = 10  # skipped rows named one by one; past these, only counted


class Skipped:
    """Rows skipped, counted by reason; the first few logged one line each, so 10,000 bad rows are not 10,000 lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, value: object) -> None:
        """Count a skipped row; ``value`` is what was wrong with it, shown quoted (it may hold newlines)."""
        self.counts[reason] += 1
        if self.total() <= MAX_WARNINGS:
            log.warning("%s: row skipped, %s: %r", self.source, reason.replace("_", " "), str(value)[:200])

    def total(self) -> int:
        return sum(self.counts.values())

    def done(self) -> dict[str, int]:
        if self.total() > MAX_WARNINGS:
            log.warning("%s: %d more rows skipped; by reason: %s", self.source, self.total() - MAX_WARNINGS,
                        dict(self.counts))
        return dict(self.counts)
