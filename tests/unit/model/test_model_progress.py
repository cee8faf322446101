"""Progress on a non-terminal stderr: a few log lines with counts and rates, no redrawn bar."""

from __future__ import annotations

import io
import logging

import pytest

from model import progress as progress_module
from model.progress import LoggedProgress, progress


def test_a_non_terminal_gets_rate_limited_log_lines(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()  # not a TTY
    monkeypatch.setattr(progress_module.sys, "stderr", stderr)
    monkeypatch.setenv("GENREC_PROGRESS_LOG_S", "3600")
    caplog.set_level(logging.INFO, logger="genrec.progress")
    with progress(total=1000, desc="eval test", unit="user") as bar:
        assert isinstance(bar, LoggedProgress)
        for _ in range(1000):
            bar.update(1)
            bar.set_postfix(loss="0.5")  # forces a refresh every step, as training does
    lines = [r.getMessage() for r in caplog.records if r.name == "genrec.progress"]
    assert len(lines) == 2  # the start and the end, nothing in between within the interval
    assert lines[-1].startswith("eval test: 1000/1000 user")
    assert "user/s" in lines[-1] and "loss=0.5" in lines[-1]
    assert stderr.getvalue() == ""  # no carriage-return updates


def test_an_unknown_total_still_logs_its_final_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="genrec.progress")
    with LoggedProgress(total=None, desc="recommend", unit="user", log_interval_s=3600) as bar:
        bar.update(7)
    assert caplog.records[-1].getMessage().startswith("recommend: 7/? user")


def test_a_bad_interval_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module.sys, "stderr", io.StringIO())
    monkeypatch.setenv("GENREC_PROGRESS_LOG_S", "soon")
    with pytest.raises(ValueError, match="GENREC_PROGRESS_LOG_S"):
        progress(total=1)
