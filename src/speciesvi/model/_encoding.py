"""Encoding cells with a speciesvi model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from scvi import REGISTRY_KEYS

if TYPE_CHECKING:
    from anndata import AnnData

Representation = Literal["z", "inter", "z_std", "library"]


class EncodingMixin:
    """``get_latent_representation`` with the representations scSpecies needs (z, inter, std, library)."""

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        representation: Representation = "z",
        batch_size: int | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Encode cells.

        Parameters
        ----------
        adata
            AnnData registered like the training data; defaults to it.
        indices
            Cells to encode; defaults to all.
        give_mean
            Posterior means (default) or one sample.
        representation
            ``"z"`` (latent), ``"inter"`` (outer encoder output, where ``alignment="inter"`` aligns),
            ``"z_std"`` (posterior standard deviation of z) or ``"library"`` (posterior mean and
            standard deviation of the log library size, two columns).
        batch_size
            Minibatch size for inference.

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_latent)``; ``(n_cells, width)`` for ``"inter"``, ``(n_cells, 2)`` for ``"library"``.
        """
        if representation not in ("z", "inter", "z_std", "library"):
            raise ValueError(f"representation must be 'z', 'inter', 'z_std' or 'library', not {representation!r}.")
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size, shuffle=False)
        self.module.eval()
        chunks = []
        for tensors in loader:
            x = tensors[REGISTRY_KEYS.X_KEY].to(self.device)
            batch_index = tensors[REGISTRY_KEYS.BATCH_KEY].to(self.device)
            if representation == "library":
                mean, std = self.module.library_posterior(x, batch_index)
                chunks.append(torch.cat([mean, std], dim=-1).cpu())
                continue
            inter = self.module.outer(x, batch_index)
            if representation == "inter":
                chunks.append(inter.cpu())
                continue
            mean, std = self.module.z_posterior(inter)
            if representation == "z_std":
                chunks.append(std.cpu())
            else:
                chunks.append((mean if give_mean else mean + std * torch.randn_like(std)).cpu())
        return torch.cat(chunks).numpy()
