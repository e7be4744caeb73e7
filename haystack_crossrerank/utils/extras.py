"""Optional dependencies, imported lazily with a message that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """
    Import an optional module, or say which extra brings it.

    :param module: The module to import, e.g. `"datasets"`.
    :param extra: The extra of this package that installs it, e.g. `"train"`.
    :returns: The module.
    :raises ImportError: If it is not installed, naming `pip install 'haystack-crossrerank[extra]'`.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"'{module}' is needed for this feature but is not installed: pip install 'haystack-crossrerank[{extra}]'"
        ) from error
