"""The target species VAE, aligned to a pretrained context VAE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import LossOutput, auto_move_data

from ._components import ExpressionDecoder, InnerEncoder
from ._context import INTER_KEY, ContextVAE
from ._modes import predicting
from ._precision import fast_matmul_dtype
from ._selection import score_candidates

NEIGHBORS_KEY = "homolog_neighbors"
AGREEMENT_KEY = "homolog_agreement"
ALIGNMENT_KEY = "alignment"
Alignment = Literal["inter", "latent"]


#: Per-cell statistics of the context cells that a :class:`TargetVAE` carries as buffers (saved with it).
CONTEXT_BUFFERS = (
    "context_z_mean",
    "context_z_std",
    "context_inter",
    "context_library_mean",
    "context_library_std",
    "context_batch",
    "context_labels",
)


def _has_layer_norm(spec: Mapping[str, Any], part: str) -> bool:
    return part in spec.get("layer_norm", ("inner", "decoder"))


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

    The module carries, frozen, what the analyses need of the context (never trained, saved in its
    ``state_dict``): the context decoder (``context_decoder``), the inner encoder (``alignment="inter"``) and the
    buffers of :data:`CONTEXT_BUFFERS`, one row per context cell: posterior mean and standard deviation of z
    (``context_z_mean``, ``context_z_std``) and of the log library size (``context_library_mean``,
    ``context_library_std``), the outer-encoder output (``context_inter``, ``alignment="inter"`` only), the batch
    code (``context_batch``) and one integer code per label column (``context_labels``, ``-1``: missing). A new
    module holds them empty (zeros, fresh weights); :meth:`load_context_state` or ``load_state_dict`` fills them.

    Parameters
    ----------
    n_input
        Number of target genes.
    context_spec
        Shapes of the context parts: ``n_obs`` (context cells), ``n_vars`` (context genes), ``n_batch``,
        ``n_latent``, ``n_inter`` (width of the context's outer-encoder output), ``n_hidden_inner``,
        ``n_hidden_decoder``, ``dropout_inner``, ``dropout_decoder``, ``gene_likelihood``, ``dispersion``,
        ``layer_norm`` (the parts among ``"inner"`` and ``"decoder"`` with layer norm) and ``n_label_columns``.
        Other keys are ignored.
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
        context_spec: Mapping[str, Any],
        alignment: Alignment = "inter",
        n_candidates: int = 25,
        agreement_cutoff: float = 0.2,
        fast_selection: bool = True,
        **kwargs,
    ):
        if alignment not in ("inter", "latent"):
            raise ValueError(f"alignment must be 'inter' or 'latent', not {alignment!r}.")
        n_latent = int(context_spec["n_latent"])
        super().__init__(n_input=n_input, n_latent=n_latent, **kwargs)
        self.alignment = alignment
        self.n_candidates = n_candidates
        self.agreement_cutoff = agreement_cutoff
        self.fast_selection = fast_selection
        n_obs, n_inter = int(context_spec["n_obs"]), int(context_spec["n_inter"])
        if alignment == "inter" and n_inter != self.outer_encoder.n_output:
            raise ValueError(
                f"The target outer encoder must end in the context's width {n_inter}, "
                f"not {self.outer_encoder.n_output}; set n_hidden_outer accordingly."
            )
        # the context parts are overwritten by the context's weights: their initialisation leaves the seed alone
        with torch.random.fork_rng(devices=[]):
            if alignment == "inter":
                self.inner_encoder = InnerEncoder(
                    n_inter,
                    n_latent,
                    tuple(context_spec["n_hidden_inner"]),
                    float(context_spec["dropout_inner"]),
                    use_layer_norm=_has_layer_norm(context_spec, "inner"),
                ).requires_grad_(False)
            self.context_decoder = ExpressionDecoder(
                n_latent,
                int(context_spec["n_vars"]),
                int(context_spec["n_batch"]),
                tuple(context_spec["n_hidden_decoder"]),
                dispersion=context_spec["dispersion"],
                gene_likelihood=context_spec["gene_likelihood"],
                dropout_rate=float(context_spec["dropout_decoder"]),
                use_layer_norm=_has_layer_norm(context_spec, "decoder"),
            ).requires_grad_(False)
        self.register_buffer("context_z_mean", torch.zeros(n_obs, n_latent))
        self.register_buffer("context_z_std", torch.zeros(n_obs, n_latent))
        if alignment == "inter":
            self.register_buffer("context_inter", torch.zeros(n_obs, n_inter))
        self.register_buffer("context_library_mean", torch.zeros(n_obs))
        self.register_buffer("context_library_std", torch.zeros(n_obs))
        self.register_buffer("context_batch", torch.zeros(n_obs, dtype=torch.long))
        n_labels = int(context_spec.get("n_label_columns", 0))
        self.register_buffer("context_labels", torch.full((n_obs, n_labels), -1, dtype=torch.int32))

    def context_state_keys(self) -> list[str]:
        """The ``state_dict`` keys of the context parts: frozen inner encoder, context decoder and buffers."""
        inner = [f"inner_encoder.{key}" for key in self.inner_encoder.state_dict()] if self.alignment == "inter" else []
        decoder = [f"context_decoder.{key}" for key in self.context_decoder.state_dict()]
        return inner + decoder + [name for name in CONTEXT_BUFFERS if hasattr(self, name)]

    @torch.no_grad()
    def load_context_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy the context parts in: exactly the keys of :meth:`context_state_keys`, each of its shape.

        Parameters
        ----------
        state
            Tensors by ``state_dict`` key (e.g. ``context_decoder.logits.weight``, ``context_z_mean``).
        """
        expected = set(self.context_state_keys())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"The context state does not fit this module: missing {missing}, unexpected {unexpected}.")
        self.load_state_dict(dict(state), strict=False)

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
