"""Argument checks shared by the component and the scorer; each error says what must hold and what was received."""

from __future__ import annotations

import math
from typing import Any


def check_int(name: str, value: Any, *, minimum: int) -> None:
    """
    :raises TypeError: If `value` is not an int (a bool is not one).
    :raises ValueError: If it is below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, but got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be > {minimum - 1}, but got {value}")


def check_number(name: str, value: Any) -> None:
    """
    :raises TypeError: If `value` is not an int or float (a bool is not one).
    :raises ValueError: If it is NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, but got {type(value).__name__} {value!r}")
    if math.isnan(value):
        raise ValueError(f"`{name}` must be a number, but got NaN")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """
    :raises TypeError: If `value` is not a str.
    :raises ValueError: If it is not one of `choices`.
    """
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {list(choices)}, but got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, but got {value!r}")
