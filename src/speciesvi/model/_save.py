"""Atomic saving and checked loading for speciesvi models."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from anndata import AnnData


def saved_var_names(dir_path: str | os.PathLike, prefix: str | None = None) -> np.ndarray:
    """Gene names stored in a saved scvi-tools model folder."""
    file = Path(dir_path) / f"{prefix or ''}model.pt"
    if not file.is_file():
        raise ValueError(f"No saved model at {file}; pass the folder written by model.save().")
    return np.asarray(torch.load(file, map_location="cpu", weights_only=False)["var_names"])


class SaveLoadMixin:
    """Atomic ``save`` and a ``load`` that refuses an AnnData whose genes differ from the saved model's.

    ``save`` writes into a temporary folder beside the target, then moves each file in with ``os.replace``:
    a crash while writing leaves the previous files intact, never a half-written ``model.pt``.
    """

    def save(self, dir_path: str | os.PathLike, prefix: str | None = None, overwrite: bool = False, **kwargs) -> None:
        """Save the model to ``dir_path`` (see :meth:`scvi.model.base.BaseModelClass.save`), atomically per file.

        Parameters
        ----------
        dir_path
            Folder to save into; created if missing.
        prefix
            Prefix of the saved file names.
        overwrite
            Replace the files of an earlier save; without it an existing folder is refused.
        **kwargs
            Passed on to :meth:`scvi.model.base.BaseModelClass.save` (``save_anndata``, ``save_kwargs``, ...).
        """
        target = Path(dir_path)
        if target.exists() and not overwrite:
            raise ValueError(f"{target} already exists. Pass overwrite=True to replace the saved model.")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            super().save(str(staging), prefix=prefix, overwrite=True, **kwargs)
            target.mkdir(exist_ok=True)
            for file in staging.iterdir():
                os.replace(file, target / file.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(cls, dir_path: str | os.PathLike, adata: AnnData | None = None, prefix: str | None = None, **kwargs):
        """Load a saved model (see :meth:`scvi.model.base.BaseModelClass.load`), checking the AnnData first.

        Parameters
        ----------
        dir_path
            Folder written by ``save``.
        adata
            AnnData with the same genes, in the same order, as the one the model was trained on.
        prefix
            Prefix of the saved file names.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``, ``device`` ...).
        """
        if adata is not None:
            expected = saved_var_names(dir_path, prefix)
            if len(expected) != adata.n_vars or not np.array_equal(expected, adata.var_names.to_numpy()):
                raise ValueError(
                    f"The AnnData's genes ({adata.n_vars}) differ from the {len(expected)} genes the saved model was "
                    "trained on (names and order must match). Subset and reorder it with adata[:, saved_genes], "
                    "where saved_genes is the var_names of the training data."
                )
        return super().load(str(dir_path), adata=adata, prefix=prefix, **kwargs)
