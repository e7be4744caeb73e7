"""Progress bars: live on a terminal, rare lines in a log file, nothing when disabled."""

from __future__ import annotations

import io
import sys

import pytest

from haystack_crossrerank.utils.progress import LOG_INTERVAL_S, progress


def test_written_to_a_file_the_bar_updates_at_most_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress(range(500), desc="work", unit="item")
    assert bar.mininterval == LOG_INTERVAL_S
    assert sum(1 for _ in bar) == 500
    # the opening and closing states only: no carriage-return update per item
    assert log.getvalue().count("\r") <= 3


def test_disabled_bar_passes_items_through_and_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(progress([1, 2, 3], desc="work", unit="item", enabled=False)) == [1, 2, 3]
    manual = progress(desc="pairs", unit="pair", total=10, enabled=False)
    manual.update(10)
    manual.close()
    assert log.getvalue() == ""
