"""Progress of long loops: a tqdm bar on a terminal, log lines with counts and rates elsewhere.

A bar redraws itself with carriage returns several times a second; written into a log file
(``nohup``, a container, CI) that is megabytes of unreadable updates. When stderr is not a
terminal the same loop logs one line every ``GENREC_PROGRESS_LOG_S`` seconds (default 30) and
one when it ends, through ``logging``, so it carries the timestamp and logger of every other
line.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from typing import Any

from tqdm import tqdm

logger = logging.getLogger("genrec.progress")

DEFAULT_LOG_INTERVAL_S = 30.0
PROGRESS_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class LoggedProgress(tqdm):
    """tqdm's counters and rates, shown as rate-limited log lines instead of a redrawn bar."""

    def __init__(self, *args: Any, log_interval_s: float = DEFAULT_LOG_INTERVAL_S, **kwargs: Any) -> None:
        self._interval = log_interval_s
        self._last_logged = -float("inf")
        self._logged_end = False
        kwargs.setdefault("bar_format", PROGRESS_FORMAT)
        super().__init__(*args, file=io.StringIO(), **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        now = time.monotonic()
        ended = self.total is not None and self.n >= self.total
        if self._logged_end or (not ended and now - self._last_logged < self._interval):
            return True
        self._last_logged, self._logged_end = now, ended
        logger.info("%s", self.format_meter(**self.format_dict))
        return True

    def close(self) -> None:
        if not self.disable and not self._logged_end:
            self._last_logged = -float("inf")  # the final count is always logged
        super().close()


def log_interval_s() -> float:
    raw = os.environ.get("GENREC_PROGRESS_LOG_S")
    try:
        return float(raw) if raw else DEFAULT_LOG_INTERVAL_S
    except ValueError:
        raise ValueError(f"GENREC_PROGRESS_LOG_S must be a number of seconds, got {raw!r}") from None


def progress(**kwargs: Any) -> tqdm:
    """A progress bar over ``tqdm(**kwargs)`` on a terminal, :class:`LoggedProgress` otherwise."""
    if sys.stderr.isatty():
        return tqdm(**kwargs)
    return LoggedProgress(log_interval_s=log_interval_s(), **kwargs)
