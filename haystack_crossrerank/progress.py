"""Progress bars that suit where the output goes: a live bar on a terminal; written to a file or a CI log, a
bar line at most once a minute, instead of hundreds of carriage-return updates."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

# Seconds between updates when standard error is not a terminal.
LOG_INTERVAL_S = 60.0


def on_terminal() -> bool:
    """`True` when standard error is an interactive terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(
    items: Iterable[Any] | None = None, *, desc: str, unit: str, total: int | None = None, enabled: bool = True
) -> Any:
    """
    A tqdm bar over `items` (or a manual one of `total` steps), or the items themselves when disabled.

    :param items: What to iterate over; `None` for a bar updated by hand.
    :param desc: The bar's label.
    :param unit: The unit counted.
    :param total: The number of steps, for a bar updated by hand.
    :param enabled: `False` returns `items` unchanged (or a bar that shows nothing).
    :returns: An iterable, or an object with `update(n)` and `close()`.
    """
    from tqdm.auto import tqdm

    interval = 0.1 if on_terminal() else LOG_INTERVAL_S
    return tqdm(
        items, desc=desc, unit=unit, total=total, disable=not enabled, mininterval=interval, maxinterval=interval * 10
    )
