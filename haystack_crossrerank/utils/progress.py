"""Progress bars that suit where the output goes: a live bar on a terminal; written to a file or a CI log, a
bar line at most once a minute, instead of hundreds of carriage-return updates. One bar per phase of a long run:
the bars that transformers draws itself while it loads or saves weights are hidden in our loads and saves."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
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
    # leave=None: a bar drawn below another one (the evaluation's, below the training bar) vanishes when done.
    return tqdm(
        items,
        desc=desc,
        unit=unit,
        total=total,
        disable=not enabled,
        mininterval=interval,
        maxinterval=interval * 10,
        leave=None,
    )


@contextlib.contextmanager
def transformers_bars_off() -> Iterator[None]:
    """
    Hide the bars that transformers draws itself ("Loading weights", "Writing model shards") inside the block, and
    restore the previous setting after it. The Hugging Face hub's download bars stay as they are.

    Blocks on several threads at once may restore out of order; the worst case is a transformers bar shown or
    hidden while another thread loads.
    """
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is None:  # transformers 4 has a single switch, which hides the hub's bars as well
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if shown:
                hf_logging.enable_progress_bar()
        return

    previous = set_hook(None)

    def hidden(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    set_hook(hidden)
    try:
        yield
    finally:
        set_hook(previous)
