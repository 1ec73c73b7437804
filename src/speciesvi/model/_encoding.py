"""Encoding cells with a speciesvi model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.data._utils import _validate_adata_dataloader_input

from ..module._modes import predicting
from ..tl._homolog_lfc import Posteriors

if TYPE_CHECKING:
    from anndata import AnnData

Representation = Literal["z", "inter", "z_std", "library"]


@torch.inference_mode()
def encode_posteriors(model, indices: np.ndarray | None = None, batch_size: int | None = None) -> Posteriors:
    """Posterior statistics of cells of a model's AnnData (a ContextVI or TargetVI), in one encoding pass."""
    model._check_if_trained(warn=False)
    module = model.module
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    with predicting(module):
        for tensors in model._make_data_loader(
            adata=model.adata, indices=indices, batch_size=batch_size, shuffle=False
        ):
            x = tensors[REGISTRY_KEYS.X_KEY].to(model.device)
            batch_index = tensors[REGISTRY_KEYS.BATCH_KEY].to(model.device)
            z_mean, z_std = module.z_posterior(module.outer(x, batch_index))
            library_mean, library_std = module.library_posterior(x, batch_index)
            for part, value in zip(parts, (z_mean, z_std, library_mean[:, 0], library_std[:, 0]), strict=True):
                part.append(value.cpu())
    arrays = [torch.cat(part).numpy() for part in parts]
    batches = np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).reshape(-1).astype(np.int64)
    if indices is not None:
        batches = batches[np.asarray(indices)]
    return Posteriors(*arrays, batches=batches)


class EncodingMixin:
    """``get_latent_representation`` with the representations scSpecies needs (z, inter, std, library)."""

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        mc_samples: int = 5_000,
        batch_size: int | None = None,
        return_dist: bool = False,
        dataloader: Iterator[dict[str, torch.Tensor | None]] | None = None,
        *,
        representation: Representation = "z",
        **data_loader_kwargs,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Encode cells.

        The arguments of :meth:`scvi.model.base.VAEMixin.get_latent_representation` mean what they mean there
        (scvi-tools' :meth:`~scvi.model.base.VAEMixin.get_aggregated_posterior` and
        :meth:`~scvi.model.base.VAEMixin.differential_abundance` call it with ``return_dist`` and
        ``dataloader``); ``representation`` selects what to encode.

        Parameters
        ----------
        adata
            AnnData registered like the training data; defaults to it (unless ``dataloader`` is given).
        indices
            Cells to encode; defaults to all. Ignored with ``dataloader``.
        give_mean
            Posterior means (default) or one sample of z.
        mc_samples
            Accepted for compatibility with scvi-tools; unused, as the posterior of z is Normal and its mean is
            exact.
        batch_size
            Minibatch size for inference. Ignored with ``dataloader``.
        return_dist
            Return the mean and the variance of the posterior of z (``representation="z"`` only).
        dataloader
            Minibatches to encode (dictionaries of tensors keyed as the model's registry) instead of ``adata``.
        representation
            ``"z"`` (latent), ``"inter"`` (outer encoder output, where ``alignment="inter"`` aligns),
            ``"z_std"`` (posterior standard deviation of z) or ``"library"`` (posterior mean and
            standard deviation of the log library size, two columns).
        **data_loader_kwargs
            Passed to the data loader made from ``adata``.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            ``(n_cells, n_latent)``; ``(n_cells, width)`` for ``"inter"``, ``(n_cells, 2)`` for ``"library"``;
            with ``return_dist``, the posterior means and variances of z, each ``(n_cells, n_latent)``.
        """
        if representation not in ("z", "inter", "z_std", "library"):
            raise ValueError(f"representation must be 'z', 'inter', 'z_std' or 'library', not {representation!r}.")
        if return_dist and representation != "z":
            raise ValueError(
                f"return_dist=True gives the posterior of z; it needs representation='z', not {representation!r}."
            )
        self._check_if_trained(warn=False)
        _validate_adata_dataloader_input(self, adata, dataloader)
        if dataloader is None:
            adata = self._validate_anndata(adata)
            dataloader = self._make_data_loader(
                adata=adata, indices=indices, batch_size=batch_size, **data_loader_kwargs
            )
        self.module.eval()
        chunks, variances = [], []
        for tensors in dataloader:
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
            elif return_dist:
                chunks.append(mean.cpu())
                variances.append(std.square().cpu())
            else:
                chunks.append((mean if give_mean else mean + std * torch.randn_like(std)).cpu())
        if return_dist:
            return torch.cat(chunks).numpy(), torch.cat(variances).numpy()
        return torch.cat(chunks).numpy()
