"""The context (reference species) VAE of scSpecies."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch.distributions import Normal
from torch.distributions import kl_divergence as kl

from ._components import MLP, Dispersion, ExpressionDecoder, GeneLikelihood, InnerEncoder, LibraryEncoder
from ._likelihood import count_log_prob_sum
from ._loss import decoder_log_prob_sum

INTER_KEY = "inter"
#: Key of the raw :class:`~speciesvi.module._components.DecoderOutputs` in the generative outputs.
DECODER_OUTPUTS_KEY = "decoder_outputs"
#: The parts of a :class:`ContextVAE` whose hidden layers can use layer norm.
PARTS = ("outer", "inner", "library", "decoder")


def layer_norm_parts(use_layer_norm: bool | Collection[str]) -> frozenset[str]:
    """The parts (of :data:`PARTS`) that use layer norm: all for ``True``, none for ``False``, else the named ones."""
    if isinstance(use_layer_norm, bool):
        return frozenset(PARTS if use_layer_norm else ())
    parts = frozenset(use_layer_norm)
    unknown = sorted(parts - set(PARTS))
    if unknown:
        raise ValueError(f"use_layer_norm names unknown parts {unknown}; choose among {list(PARTS)} or pass a bool.")
    return parts


class ContextVAE(BaseModuleClass):
    """Conditional VAE of one species: outer encoder, shared inner encoder, library encoder and decoder.

    ``x`` (counts) → ``log1p`` → outer encoder (with the batch one-hot) → "inter" → inner encoder →
    q(z); a library encoder gives q(log l) with a per-batch Normal prior; the decoder maps ``(z, batch)``
    to a softmax expression ``rho`` and the count likelihood uses ``mu = l * rho``.

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches.
    n_latent
        Dimension of z.
    n_hidden_outer, n_hidden_inner, n_hidden_library, n_hidden_decoder
        Hidden layer sizes of the outer, inner, library encoders and the decoder.
    dropout_rate
        Dropout after each hidden layer.
    dispersion
        ``"gene"``, ``"gene-batch"`` or ``"gene-cell"``.
    gene_likelihood
        ``"zinb"`` or ``"nb"``.
    library_log_means, library_log_vars
        Per-batch mean and variance of the log total counts: the prior of ``log l``. Shape ``(n_batch,)``.
    use_layer_norm
        Layer norm after the hidden layers: ``True`` (default) in every part, ``False`` in none, or the
        parts that use it among ``"outer"``, ``"inner"``, ``"library"`` and ``"decoder"`` (a context
        adopted from scvi-tools' SCVI keeps that model's choice, see :meth:`speciesvi.ContextVI.from_scvi_model`).
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 1,
        n_latent: int = 10,
        n_hidden_outer: Sequence[int] = (300,),
        n_hidden_inner: Sequence[int] = (200,),
        n_hidden_library: Sequence[int] = (200,),
        n_hidden_decoder: Sequence[int] = (200, 300),
        dropout_rate: float = 0.1,
        dispersion: Dispersion = "gene-batch",
        gene_likelihood: GeneLikelihood = "zinb",
        library_log_means: np.ndarray | None = None,
        library_log_vars: np.ndarray | None = None,
        use_layer_norm: bool | Collection[str] = True,
    ):
        super().__init__()
        norm = layer_norm_parts(use_layer_norm)
        self.n_input = n_input
        self.n_batch = n_batch
        self.n_latent = n_latent
        means = np.zeros(n_batch) if library_log_means is None else np.asarray(library_log_means).reshape(-1)
        variances = np.ones(n_batch) if library_log_vars is None else np.asarray(library_log_vars).reshape(-1)
        self.register_buffer("library_log_means", torch.as_tensor(means, dtype=torch.float32))
        self.register_buffer("library_log_vars", torch.as_tensor(variances, dtype=torch.float32))

        self.outer_encoder = MLP(
            n_input, n_hidden_outer, n_cat_list=[n_batch], dropout_rate=dropout_rate, use_layer_norm="outer" in norm
        )
        self.inner_encoder = InnerEncoder(
            self.outer_encoder.n_output, n_latent, n_hidden_inner, dropout_rate, use_layer_norm="inner" in norm
        )
        self.library_encoder = LibraryEncoder(
            n_input,
            n_hidden_library,
            n_cat_list=[n_batch],
            dropout_rate=dropout_rate,
            log_library_offset=float(means.mean()),
            use_layer_norm="library" in norm,
        )
        self.decoder = ExpressionDecoder(
            n_latent,
            n_input,
            n_batch,
            n_hidden_decoder,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            dropout_rate=dropout_rate,
            use_layer_norm="decoder" in norm,
        )

    # -- the parts later stages need, one function each ------------------------------------------
    def outer(self, x: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Outer encoder output ("inter") of raw counts ``x``."""
        return self.outer_encoder(torch.log1p(x), batch_index)

    def z_posterior(self, inter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z | inter)."""
        return self.inner_encoder(inter)

    def library_posterior(self, x: torch.Tensor, batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(log l | x, batch)."""
        return self.library_encoder(torch.log1p(x), batch_index)

    def expression_logits(self, z: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Decoder logits; their softmax is the expression ``rho`` (renormalise over any gene subset)."""
        return self.decoder.expression_logits(z, batch_index)

    # -- BaseModuleClass interface ---------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            MODULE_KEYS.X_KEY: tensors[REGISTRY_KEYS.X_KEY],
            MODULE_KEYS.BATCH_INDEX_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {
            MODULE_KEYS.Z_KEY: inference_outputs[MODULE_KEYS.Z_KEY],
            MODULE_KEYS.LIBRARY_KEY: inference_outputs[MODULE_KEYS.LIBRARY_KEY],
            MODULE_KEYS.BATCH_INDEX_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    @auto_move_data
    def inference(self, x: torch.Tensor, batch_index: torch.Tensor, n_samples: int = 1) -> dict:
        """Encode counts: inter, q(z), q(log l) and one sample of each."""
        x_log = torch.log1p(x)  # both encoders read log counts
        inter = self.outer_encoder(x_log, batch_index)
        qz = Normal(*self.z_posterior(inter))
        ql = Normal(*self.library_encoder(x_log, batch_index))
        sample_shape = () if n_samples == 1 else (n_samples,)
        return {
            INTER_KEY: inter,
            MODULE_KEYS.QZ_KEY: qz,
            MODULE_KEYS.QL_KEY: ql,
            MODULE_KEYS.Z_KEY: qz.rsample(sample_shape),
            MODULE_KEYS.LIBRARY_KEY: ql.rsample(sample_shape),
        }

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
        transform_batch: int | None = None,
    ) -> dict:
        """Decode z under a batch (``transform_batch`` overrides it) into the count distribution.

        Besides the distribution (``px``), the raw decoder outputs (``decoder_outputs``), from which the
        loss computes the likelihood with closed-form gradients.
        """
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        outputs = self.decoder.outputs(z, batch_index)
        return {MODULE_KEYS.PX_KEY: self.decoder.distribution(outputs, library), DECODER_OUTPUTS_KEY: outputs}

    def library_prior(self, batch_index: torch.Tensor) -> Normal:
        """Per-batch prior of ``log l``."""
        index = batch_index.reshape(-1).long()
        return Normal(self.library_log_means[index].unsqueeze(-1), self.library_log_vars[index].sqrt().unsqueeze(-1))

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """Negative ELBO: reconstruction NLL + ``kl_weight`` · KL(z) + KL(log l)."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        outputs = generative_outputs.get(DECODER_OUTPUTS_KEY)
        if outputs is None or outputs.logits.dim() != 2:
            reconstruction = -count_log_prob_sum(generative_outputs[MODULE_KEYS.PX_KEY], x)
        else:
            library = inference_outputs[MODULE_KEYS.LIBRARY_KEY]
            reconstruction = -decoder_log_prob_sum(outputs.logits, library, outputs.log_theta, x, outputs.zi_logits)
        qz = inference_outputs[MODULE_KEYS.QZ_KEY]
        kl_z = kl(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))).sum(-1)
        kl_l = kl(inference_outputs[MODULE_KEYS.QL_KEY], self.library_prior(tensors[REGISTRY_KEYS.BATCH_KEY])).sum(-1)
        loss = torch.mean(reconstruction + kl_weight * kl_z + kl_l)
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            kl_local={MODULE_KEYS.KL_Z_KEY: kl_z, MODULE_KEYS.KL_L_KEY: kl_l},
        )
