"""What a speciesvi ``model.pt`` may hold when read with ``weights_only=True``: the allow-list and its helpers."""

from __future__ import annotations

import collections
import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Callable


def _numpy_pandas_globals() -> list[Callable | tuple[Callable, str]]:
    """The numpy and pandas types scvi-tools' ``model.pt`` holds (var names, registries, training history)."""
    found: list[Callable | tuple[Callable, str]] = [
        slice,
        dict,
        bytes,
        np.ndarray,
        np.dtype,
        # dtype classes (numpy >= 1.25 may name them when pickling a dtype)
        *sorted({type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGOUSMm"}, key=str),
        pd.DataFrame,
        pd.Series,
        pd.Index,
        pd.RangeIndex,
    ]
    multiarray = getattr(np, "_core", getattr(np, "core", None)).multiarray
    for name in ("_reconstruct", "scalar"):
        function = getattr(multiarray, name)
        found.append(function)
        # files written under numpy 1 name numpy.core, under numpy 2 numpy._core
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            if f"{function.__module__}.{name}" != f"{module}.{name}":
                found.append((function, f"{module}.{name}"))
    for module, names in (
        ("pandas.core.indexes.base", ("_new_Index",)),
        ("pandas.core.internals.managers", ("BlockManager", "SingleBlockManager")),
        ("pandas.core.internals.blocks", ("new_block",)),
        ("pandas._libs.internals", ("_unpickle_block",)),
    ):
        try:
            imported = __import__(module, fromlist=list(names))
        except ImportError:  # pragma: no cover - another pandas layout
            continue
        found.extend(getattr(imported, name) for name in names if hasattr(imported, name))
    return found


@functools.cache
def safe_globals() -> tuple[Callable | tuple[Callable, str], ...]:
    """The globals a speciesvi ``model.pt`` may name: plain numpy arrays and scalars, pandas frames and indexes.

    Passed to :class:`torch.serialization.safe_globals` while a model file is read with ``weights_only=True``.
    None of them runs code of the file's choosing: classes and functions outside this list are refused.

    Returns
    -------
    tuple
        Classes and functions, some as ``(object, "module.name")`` for the name an older numpy wrote.
    """
    return tuple(_numpy_pandas_globals())


class DefaultDicts:
    """Reads ``collections.defaultdict`` (scvi-tools' registries) as plain dicts, then turns them back.

    torch's weights-only unpickler fills only plain dicts; this stands in for ``collections.defaultdict`` while a
    file is read (its factory must itself be an allowed global, e.g. ``dict``) and remembers which dicts to restore.
    """

    def __init__(self):
        self._made: dict[int, tuple[dict, Any]] = {}  # id -> (the dict, kept alive so ids stay unique; factory)

    def __call__(self, default_factory: Any = None, *args) -> dict:
        made = dict(*args)
        self._made[id(made)] = (made, default_factory)
        return made

    def restore(self, value: Any) -> Any:
        """``value`` with the stand-in dicts turned back into ``collections.defaultdict``."""
        if isinstance(value, dict):
            items = {key: self.restore(item) for key, item in value.items()}
            if id(value) in self._made:
                return collections.defaultdict(self._made[id(value)][1], items)
            value.update(items)
            return value
        if isinstance(value, list):
            return [self.restore(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.restore(item) for item in value)
        return value
