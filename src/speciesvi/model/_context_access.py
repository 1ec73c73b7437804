"""What a TargetVI reads about its context: the one place that knows where it is kept."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scvi import REGISTRY_KEYS

from ._encoding import Posteriors, encode_posteriors

if TYPE_CHECKING:
    from ..module._components import ExpressionDecoder


class ContextAccessMixin:
    """Accessors of the context species' data and networks, mixed into :class:`~speciesvi.TargetVI`.

    Analysis code (similarity, transfer, homolog LFC) reads the context only through these methods.
    """

    def _context_decoder(self) -> ExpressionDecoder:
        """The context model's decoder (frozen)."""
        return self.context_model.module.decoder

    def _context_var_names(self) -> pd.Index:
        """Gene names of the context model, in its decoder's order."""
        return self.context_model.adata.var_names

    def _context_obs_names(self) -> pd.Index:
        """Names of the context cells, in the order of every per-context-cell array."""
        return self.context_model.adata.obs_names

    def _context_n_obs(self) -> int:
        return int(self.module.context_z_mean.shape[0])

    def _context_labels_key(self) -> str | None:
        """The labels key the context model was set up with."""
        return self.context_model.labels_key

    def _context_label_columns(self) -> list[str]:
        """Context ``obs`` columns that can be transferred."""
        return list(self.context_model.adata.obs.columns)

    def _context_label_column(self, key: str) -> pd.Series:
        """One context ``obs`` column (missing labels as NaN), indexed by the context cell names."""
        return self.context_model.adata.obs[key]

    def _context_batches(self) -> np.ndarray:
        """Batch code of every context cell (codes of the context model's batches), int64."""
        codes = self.context_model.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)
        return np.asarray(codes).reshape(-1).astype(np.int64)

    def _context_posteriors(self) -> Posteriors:
        """Posterior statistics of z and of the log library size of every context cell."""
        return encode_posteriors(self.context_model)
