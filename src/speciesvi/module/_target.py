"""The target species VAE, aligned to a pretrained context VAE."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import LossOutput, auto_move_data

from ._components import InnerEncoder
from ._context import INTER_KEY, ContextVAE
from ._modes import predicting
from ._precision import fast_matmul_dtype
from ._selection import score_candidates

NEIGHBORS_KEY = "homolog_neighbors"
AGREEMENT_KEY = "homolog_agreement"
ALIGNMENT_KEY = "alignment"
Alignment = Literal["inter", "latent"]


class TargetVAE(ContextVAE):
    """VAE of the target species whose cells are encoded into the latent space of a context VAE.

    It has its own outer encoder, library encoder and decoder over the target genes. With
    ``alignment="inter"`` the inner encoder is a frozen copy of the context's, and the alignment pulls
    the target cell's outer-encoder output towards a context cell's; with ``"latent"`` it has its own
    inner encoder and the alignment acts on z.

    Alignment term, for each target cell whose data-level agreement score is below ``agreement_cutoff``:
    sample z for each of its first ``n_candidates`` data-level context neighbours from their context
    posteriors, decode each with this (target) decoder under the target cell's batch and library, take
    the candidate whose decoded distribution gives the cell's counts the highest likelihood, and add the
    squared distance between the cell's representation (inter or z) and that candidate's.

    Parameters
    ----------
    n_input
        Number of target genes.
    context_z_mean, context_z_std
        Posterior mean and standard deviation of z of every context cell, ``(n_context, n_latent)``.
    context_inter
        Outer-encoder output of every context cell (needed for ``alignment="inter"``).
    context_inner_encoder
        The context's inner encoder; copied in and frozen for ``alignment="inter"``.
    alignment
        ``"inter"`` or ``"latent"``.
    n_candidates
        Data-level neighbours considered per target cell.
    agreement_cutoff
        Cells with a data-level agreement score below it are aligned (``top_percent / 100``).
    fast_selection
        Decode the candidates with bfloat16 matrix products where those are fast (CUDA with bf16 support, CPUs
        with AMX or AVX512-BF16); selection only, the loss stays float32.
    **kwargs
        Architecture arguments of :class:`ContextVAE`.
    """

    def __init__(
        self,
        n_input: int,
        context_z_mean: torch.Tensor,
        context_z_std: torch.Tensor,
        context_inter: torch.Tensor | None = None,
        context_inner_encoder: InnerEncoder | None = None,
        alignment: Alignment = "inter",
        n_candidates: int = 25,
        agreement_cutoff: float = 0.2,
        fast_selection: bool = True,
        **kwargs,
    ):
        super().__init__(n_input=n_input, n_latent=context_z_mean.shape[1], **kwargs)
        if alignment not in ("inter", "latent"):
            raise ValueError(f"alignment must be 'inter' or 'latent', not {alignment!r}.")
        self.alignment = alignment
        self.n_candidates = n_candidates
        self.agreement_cutoff = agreement_cutoff
        self.fast_selection = fast_selection
        if alignment == "inter":
            if context_inter is None or context_inner_encoder is None:
                raise ValueError("alignment='inter' needs the context's inner encoder and outer-encoder outputs.")
            if context_inter.shape[1] != self.outer_encoder.n_output:
                raise ValueError(
                    f"The target outer encoder must end in the context's width {context_inter.shape[1]}, "
                    f"not {self.outer_encoder.n_output}; set n_hidden_outer accordingly."
                )
            # a copy of the context's own module keeps its architecture (e.g. no layer norm when adopted from SCVI)
            self.inner_encoder = copy.deepcopy(context_inner_encoder).train(self.training)
            self.inner_encoder.requires_grad_(False)
        # Context statistics are recomputed from the context model when a TargetVI is built or loaded.
        self.register_buffer("context_z_mean", context_z_mean.float(), persistent=False)
        self.register_buffer("context_z_std", context_z_std.float(), persistent=False)
        if context_inter is not None:
            self.register_buffer("context_inter", context_inter.float(), persistent=False)

    @auto_move_data
    def best_candidates(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        log_library: torch.Tensor,
        candidates: torch.Tensor,
    ) -> torch.Tensor:
        """Index (into the context) of the candidate that explains each cell's counts best.

        Parameters
        ----------
        x
            Counts, ``(cells, genes)``.
        batch_index
            Target batch of each cell, ``(cells, 1)``.
        log_library
            Log library size of each cell, ``(cells, 1)``.
        candidates
            Context indices, ``(cells, k)``.

        Each candidate's z is sampled from its context posterior and decoded without gradients by the decoder
        as it predicts (dropout off: the choice should not depend on which hidden units dropout silenced in
        this step). With ``fast_selection`` on hardware where they are fast
        (:func:`~speciesvi.module._precision.fast_matmul_dtype`), the output layers' products are bfloat16; only
        the choice of the best candidate depends on them. Scoring:
        :func:`~speciesvi.module._selection.score_candidates`.
        """
        cand = candidates.long()
        n_cells, k = cand.shape
        decoder = self.decoder
        fast = self.fast_selection and fast_matmul_dtype(x.device) == torch.bfloat16
        with torch.no_grad(), predicting(decoder):
            mean, std = self.context_z_mean[cand], self.context_z_std[cand]  # (cells, k, L)
            z = (mean + std * torch.randn_like(std)).reshape(n_cells * k, -1)
            hidden = decoder.hidden(z, batch_index.repeat_interleave(k, dim=0)).view(n_cells, k, -1)
            log_lik = score_candidates(
                decoder,
                hidden,
                batch_index,
                log_library.detach(),
                x,
                matmul_dtype=torch.bfloat16 if fast else torch.float32,
            )
        return cand.gather(1, log_lik.argmax(1, keepdim=True)).squeeze(1)

    def alignment_loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
    ) -> torch.Tensor:
        """Per-cell squared distance to the best data-level candidate (zero for cells not aligned)."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        aligned = tensors[AGREEMENT_KEY].reshape(-1) < self.agreement_cutoff
        out = torch.zeros(x.shape[0], device=x.device)
        if not aligned.any():
            return out
        candidates = tensors[NEIGHBORS_KEY][aligned, : self.n_candidates]
        library = inference_outputs[MODULE_KEYS.LIBRARY_KEY][aligned]
        best = self.best_candidates(x[aligned], tensors[REGISTRY_KEYS.BATCH_KEY][aligned], library, candidates)
        if self.alignment == "inter":
            own, anchor = inference_outputs[INTER_KEY][aligned], self.context_inter[best]
        else:
            own, anchor = inference_outputs[MODULE_KEYS.QZ_KEY].loc[aligned], self.context_z_mean[best]
        return out.index_put((aligned.nonzero().squeeze(1),), ((own - anchor) ** 2).sum(-1))

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
        eta: float = 0.0,
    ) -> LossOutput:
        """Negative ELBO + ``eta`` · alignment term (its minibatch mean is logged as ``alignment``)."""
        elbo = super().loss(tensors, inference_outputs, generative_outputs, kl_weight=kl_weight)
        alignment = self.alignment_loss(tensors, inference_outputs) if eta > 0 else None
        if alignment is None:
            mean_alignment = torch.zeros((), device=elbo.loss.device)
        else:
            mean_alignment = alignment.mean()
        return LossOutput(
            loss=elbo.loss + eta * mean_alignment,
            reconstruction_loss=elbo.reconstruction_loss,
            kl_local=elbo.kl_local,
            extra_metrics={ALIGNMENT_KEY: mean_alignment.detach()},
        )
