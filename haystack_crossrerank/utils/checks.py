"""Argument checks shared by the component and the scorer; each error says what must hold and what was received."""

from __future__ import annotations

import math
import threading
from typing import Any


def check_int(name: str, value: Any, *, minimum: int, optional: bool = False) -> None:
    """
    :param optional: `None` is accepted too.
    :raises TypeError: If `value` is not an int (a bool is not one).
    :raises ValueError: If it is below `minimum`.
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, but got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be > {minimum - 1}, but got {value}")


def check_number(name: str, value: Any, *, optional: bool = False, unit_interval: bool = False) -> None:
    """
    :param optional: `None` is accepted too.
    :param unit_interval: The value must lie in [0, 1].
    :raises TypeError: If `value` is not an int or float (a bool is not one).
    :raises ValueError: If it is NaN, or outside [0, 1] when `unit_interval` is set.
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, but got {type(value).__name__} {value!r}")
    if math.isnan(value):
        raise ValueError(f"`{name}` must be a number, but got NaN")
    if unit_interval and not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], but got {value}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """
    :raises TypeError: If `value` is not a str.
    :raises ValueError: If it is not one of `choices`.
    """
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {list(choices)}, but got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, but got {value!r}")


class CopyableLock:
    """
    A `threading.Lock` for objects that are copied or pickled (components, scorers): a copy gets a fresh, released
    lock of its own instead of failing ("cannot pickle '_thread.lock' object").
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> CopyableLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def __deepcopy__(self, memo: dict[int, Any]) -> CopyableLock:
        return CopyableLock()

    def __reduce__(self) -> tuple[type[CopyableLock], tuple[()]]:
        return (CopyableLock, ())
