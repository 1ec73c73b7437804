"""Result tables kept in AnnData: written under a ``.uns`` key with their parameters, and read back.

``TargetVI.homolog_lfc`` and ``TargetVI.cell_type_similarity`` store ``uns[key] = {"kind", "table", "params"}``;
a DataFrame in ``.uns`` is a type the h5ad and zarr writers of anndata store, so the tables survive
``write_h5ad``/``read_h5ad`` (CellRank's ``write_to_adata``/``from_adata`` habit).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Default ``.uns`` key of :meth:`speciesvi.TargetVI.homolog_lfc`.
LFC_KEY = "speciesvi_lfc"
#: Default ``.uns`` key of :meth:`speciesvi.TargetVI.cell_type_similarity`.
CELL_TYPE_SIMILARITY_KEY = "speciesvi_cell_type_similarity"

_WRITERS = {
    "homolog_lfc": "TargetVI.homolog_lfc",
    "cell_type_similarity": "TargetVI.cell_type_similarity",
}


def check_key_added(key_added: str | None) -> str | None:
    """``key_added`` if it is a non-empty string or ``None``, else a ValueError that says what to pass."""
    if key_added is not None and (not isinstance(key_added, str) or not key_added):
        raise ValueError(
            f"key_added must be a non-empty string (the .uns key) or None (write nothing), not {key_added!r}."
        )
    return key_added


def _plain(value: Any) -> Any:
    """Parameters as written to ``.uns``: ``None`` as "None", tuples as lists; read back: arrays as lists."""
    if value is None:
        return "None"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_result(adata: AnnData, key: str, kind: str, table: pd.DataFrame, params: dict) -> None:
    """Store ``table`` and ``params`` as ``adata.uns[key]`` (a copy of the table, without its ``attrs``).

    Parameters
    ----------
    adata
        The AnnData to write to.
    key
        The ``.uns`` key.
    kind
        ``"homolog_lfc"`` or ``"cell_type_similarity"``; checked by the readers.
    table
        The result table.
    params
        The parameters (``None`` values are stored as "None", as ``.uns`` cannot hold ``None``).

    Examples
    --------
    >>> import anndata
    >>> adata = anndata.AnnData(np.zeros((2, 1), dtype=np.float32))
    >>> write_result(adata, "types", "cell_type_similarity", pd.DataFrame({"a": [1.0]}, index=["x"]), {})
    >>> read_cell_type_similarity(adata, "types")
         a
    x  1.0
    """
    if kind not in _WRITERS:
        raise ValueError(f"kind must be one of {sorted(_WRITERS)}, got {kind!r}.")
    stored = table.copy()
    stored.attrs = {}
    stored.columns = [str(c) for c in stored.columns]  # the writers need string column names
    params = {
        **_plain(params),
        "index_name": _plain(table.index.name),
        "columns_name": _plain(table.columns.name),
        "range_index": isinstance(table.index, pd.RangeIndex),
    }
    adata.uns[key] = {"kind": kind, "table": stored, "params": params}
    logger.info("%s: table (%d x %d) written to uns[%r].", _WRITERS[kind], *table.shape, key)


def _read(adata: AnnData, key: str, kind: str, default: str) -> pd.DataFrame:
    entry = adata.uns.get(key) if isinstance(key, str) else None
    writer = _WRITERS[kind]
    if not isinstance(entry, dict) or entry.get("kind") != kind or "table" not in entry:
        found = sorted(k for k, v in adata.uns.items() if isinstance(v, dict) and v.get("kind") == kind)
        what = "has no entry" if entry is None else "holds no table of " + writer.split(".")[1]
        raise ValueError(
            f"adata.uns[{key!r}] {what}; run {writer}(key_added={key!r}) on the model of this AnnData first, or pass "
            f"the key it wrote to (default {default!r}; keys holding such tables here: {found})."
        )
    params = _plain(dict(entry.get("params", {})))
    table = entry["table"].copy()
    if params.pop("range_index", False):
        table.index = pd.RangeIndex(len(table))
    index_name, columns_name = params.pop("index_name", "None"), params.pop("columns_name", "None")
    table.index.name = None if index_name == "None" else index_name
    table.columns.name = None if columns_name == "None" else columns_name
    table.attrs["params"] = params
    return table


def read_homolog_lfc(adata: AnnData, key: str = LFC_KEY) -> pd.DataFrame:
    """The table :meth:`speciesvi.TargetVI.homolog_lfc` wrote to ``adata.uns[key]``.

    Parameters
    ----------
    adata
        The target AnnData (also after ``write_h5ad``/``read_h5ad``).
    key
        The ``key_added`` of ``homolog_lfc``.

    Returns
    -------
    pandas.DataFrame
        The table ``homolog_lfc`` returned, with its parameters in ``attrs["params"]``.

    Examples
    --------
    >>> target.homolog_lfc()
    >>> human.write_h5ad("human.h5ad")
    >>> lfc = speciesvi.tl.read_homolog_lfc(anndata.read_h5ad("human.h5ad"))
    >>> lfc.attrs["params"]["delta"]
    """
    return _read(adata, key, "homolog_lfc", LFC_KEY)


def read_cell_type_similarity(adata: AnnData, key: str = CELL_TYPE_SIMILARITY_KEY) -> pd.DataFrame:
    """The table :meth:`speciesvi.TargetVI.cell_type_similarity` wrote to ``adata.uns[key]``.

    Parameters
    ----------
    adata
        The target AnnData (also after ``write_h5ad``/``read_h5ad``).
    key
        The ``key_added`` of ``cell_type_similarity``.

    Returns
    -------
    pandas.DataFrame
        Target types (rows) x context types (columns), as ``cell_type_similarity`` returned it, with its
        parameters in ``attrs["params"]``.

    Examples
    --------
    >>> target.cell_type_similarity(scale="min_max")
    >>> speciesvi.tl.read_cell_type_similarity(human).idxmax(axis=1)
    """
    return _read(adata, key, "cell_type_similarity", CELL_TYPE_SIMILARITY_KEY)
