"""Where a query model's novelty calibration comes from: the reference's cells, found in the reference's AnnData."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import anndata

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: ``transfer_labels``' default ``key_added``; its record is looked up first.
DEFAULT_KEY_ADDED = "speciesvi"


def recorded_calibration(adata: AnnData | None) -> dict | None:
    """The novelty calibration that ``transfer_labels`` estimated on these cells and wrote to ``uns``, if any.

    ``uns["speciesvi_params"]`` is looked at first, then every other ``uns[..."_params"]`` of a
    ``transfer_labels`` run whose calibration was estimated on these cells (``source == "own"``).
    """
    if adata is None:
        return None
    keys = [f"{DEFAULT_KEY_ADDED}_params"] + sorted(k for k in adata.uns if str(k).endswith("_params"))
    for key in dict.fromkeys(keys):
        record = adata.uns.get(key)
        calibration = record.get("novelty_calibration") if isinstance(record, dict) else None
        if isinstance(calibration, dict) and calibration.get("source") == "own":
            return dict(calibration)
    return None


def saved_calibration(dir_path: str | os.PathLike, prefix: str | None = None) -> dict | None:
    """The calibration recorded in the AnnData saved beside a model (``save(..., save_anndata=True)``), if any."""
    path = Path(dir_path) / f"{prefix or ''}adata.h5ad"
    if not path.is_file():
        return None
    saved = anndata.read_h5ad(path, backed="r")  # reads obs, var and uns; the counts stay on disk
    try:
        return recorded_calibration(saved)
    finally:
        saved.file.close()


def reference_calibration(reference_model, estimate) -> dict | None:
    """The reference's novelty location and scale for a query's "Unassigned" rule (``None``: not available).

    Parameters
    ----------
    reference_model
        A :class:`~speciesvi.TargetVI` or the folder it was saved to.
    estimate
        Called without arguments to estimate the calibration on the reference model's own cells when it has
        cells and a labelled context but no recorded calibration; ``None`` when that is impossible.

    Returns
    -------
    dict or None
        The calibration with ``source="reference"``.
    """
    if isinstance(reference_model, str | os.PathLike):
        calibration = saved_calibration(reference_model)
    else:
        calibration = recorded_calibration(reference_model.adata)
        if calibration is None and estimate is not None:
            calibration = estimate()
    if calibration is None:
        logger.warning(
            "The reference model carries no novelty calibration (run reference.transfer_labels() and save it with "
            "save_anndata=True); the query's 'Unassigned' rule will be calibrated on the query cells alone."
        )
        return None
    return dict(calibration, source="reference")
