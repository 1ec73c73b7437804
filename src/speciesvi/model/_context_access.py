"""What a TargetVI reads about its context: the one place that knows where it is kept.

Everything is carried by the target model itself (see :mod:`speciesvi.model._context_state`): tensors in the
module (``self.module.context_*``), names and categories in ``self.context_metadata_``. No context model is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._context_state import label_column
from ._encoding import Posteriors

if TYPE_CHECKING:
    import torch

    from ..module._components import ExpressionDecoder


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


class ContextAccessMixin:
    """Accessors of the context species' data and networks, mixed into :class:`~speciesvi.TargetVI`.

    Analysis code (similarity, transfer, homolog LFC) reads the context only through these methods.
    """

    def _context_metadata(self) -> dict:
        metadata = getattr(self, "context_metadata_", None)
        if metadata is None:
            raise ValueError(
                "This TargetVI carries no context metadata (context_metadata_ is None); build it with "
                "TargetVI(adata, context_model) or load it with TargetVI.load."
            )
        return metadata

    def _context_decoder(self) -> ExpressionDecoder:
        """The context model's decoder (a frozen copy carried by the target module)."""
        return self.module.context_decoder

    def _context_var_names(self) -> pd.Index:
        """Gene names of the context model, in its decoder's order."""
        return pd.Index(self._context_metadata()["var_names"])

    def _context_obs_names(self) -> pd.Index:
        """Names of the context cells, in the order of every per-context-cell array."""
        return pd.Index(self._context_metadata()["obs_names"])

    def _context_n_obs(self) -> int:
        return int(self.module.context_z_mean.shape[0])

    def _context_labels_key(self) -> str | None:
        """The labels key the context model was set up with."""
        return self._context_metadata()["labels_key"]

    def _context_label_columns(self) -> list[str]:
        """Context ``obs`` columns that can be transferred (those kept with the model)."""
        return [column["name"] for column in self._context_metadata()["label_columns"]]

    def _context_label_column(self, key: str) -> pd.Series:
        """One context ``obs`` column (missing labels as NaN), indexed by the context cell names."""
        return label_column(self._context_metadata(), _array(self.module.context_labels), key)

    def _context_batches(self) -> np.ndarray:
        """Batch code of every context cell (codes of the context model's batches), int64."""
        return _array(self.module.context_batch).astype(np.int64)

    def _context_posteriors(self) -> Posteriors:
        """Posterior statistics of z and of the log library size of every context cell."""
        module = self.module
        return Posteriors(
            z_mean=_array(module.context_z_mean),
            z_std=_array(module.context_z_std),
            library_mean=_array(module.context_library_mean),
            library_std=_array(module.context_library_std),
            batches=self._context_batches(),
        )
