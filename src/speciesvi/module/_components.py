"""Building blocks shared by the context and target modules.

Every block is made of scvi-tools' :class:`~scvi.nn.FCLayers` (linear, layer norm, ReLU, dropout), so
that batch one-hots sit in the last input columns of each first layer, as scArches query mapping expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.nn import FCLayers
from torch import nn

Dispersion = Literal["gene", "gene-batch", "gene-cell"]
GeneLikelihood = Literal["zinb", "nb"]

#: Smallest standard deviation of a posterior, to keep sampling and KL terms finite.
STD_FLOOR = 1e-4
#: Bounds on log standard deviations predicted by the encoders.
LOG_STD_BOUNDS = (-10.0, 5.0)
#: Upper bound on the log inverse dispersion (theta <= e^12: practically Poisson).
LOG_THETA_MAX = 12.0
#: Standard deviation of the initial log inverse dispersions around 0 (theta near 1), as the original scSpecies.
#: The dispersions move little within a 40-epoch budget, so a unit-variance start (scvi-tools' ``px_r``)
#: would leave each gene with a random dispersion between about e^-2 and e^2.
LOG_THETA_INIT_SD = 0.1


class DecoderOutputs(NamedTuple):
    """What :class:`ExpressionDecoder` predicts for each cell, before the library size enters."""

    #: Expression logits, ``(..., cells, genes)``; their softmax is ``rho``.
    logits: torch.Tensor
    #: Log inverse dispersions, broadcastable to ``logits``.
    log_theta: torch.Tensor
    #: Zero-inflation logits shaped as ``logits``, or ``None`` for the negative binomial.
    zi_logits: torch.Tensor | None


class MLP(nn.Module):
    """Stack of fully connected blocks with hidden sizes ``dims``; covariates enter the first block only.

    Parameters
    ----------
    n_input
        Input width.
    dims
        Output width of each block, e.g. ``(200, 300)``.
    n_cat_list
        Number of categories of each categorical covariate (one-hot encoded into the first block).
    dropout_rate
        Dropout after each block.
    use_layer_norm
        Layer norm (without affine parameters) after each linear layer.
    """

    def __init__(
        self,
        n_input: int,
        dims: Sequence[int],
        n_cat_list: Sequence[int] | None = None,
        dropout_rate: float = 0.1,
        use_layer_norm: bool = True,
    ):
        super().__init__()
        if len(dims) == 0:
            raise ValueError("An MLP needs at least one hidden layer size.")
        widths = [n_input, *dims]
        self.blocks = nn.ModuleList(
            FCLayers(
                n_in=widths[i],
                n_out=widths[i + 1],
                n_cat_list=list(n_cat_list or []) if i == 0 else None,
                n_layers=1,
                dropout_rate=dropout_rate,
                use_batch_norm=False,
                use_layer_norm=use_layer_norm,
            )
            for i in range(len(dims))
        )
        self.n_output = widths[-1]

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor) -> torch.Tensor:
        """Apply the blocks; ``cat_list`` holds the category index of each covariate."""
        x = self.blocks[0](x, *cat_list)
        for block in self.blocks[1:]:
            x = block(x)
        return x


class GaussianHead(nn.Module):
    """Linear map from a hidden layer to the mean and standard deviation of a diagonal Normal."""

    def __init__(self, n_input: int, n_output: int):
        super().__init__()
        self.mean = nn.Linear(n_input, n_output)
        self.log_std = nn.Linear(n_input, n_output)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mean, std)``."""
        log_std = self.log_std(h).clamp(*LOG_STD_BOUNDS)
        return self.mean(h), log_std.exp() + STD_FLOOR


class InnerEncoder(nn.Module):
    """The species-agnostic encoder from the outer encoder's output ("inter") to the posterior of z.

    Parameters
    ----------
    n_input
        Width of the outer encoder's output.
    n_latent
        Dimension of z.
    dims
        Hidden layer sizes.
    dropout_rate
        Dropout after each hidden layer.
    use_layer_norm
        Layer norm after each hidden layer.
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int,
        dims: Sequence[int] = (200,),
        dropout_rate: float = 0.1,
        use_layer_norm: bool = True,
    ):
        super().__init__()
        self.mlp = MLP(n_input, dims, dropout_rate=dropout_rate, use_layer_norm=use_layer_norm)
        self.head = GaussianHead(self.mlp.n_output, n_latent)

    def forward(self, inter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean and standard deviation of q(z | inter)."""
        return self.head(self.mlp(inter))


class LibraryEncoder(nn.Module):
    """Encoder of the log library size, a Normal posterior over ``log l`` (so ``l`` is log-normal).

    The mean is offset by ``log_library_offset`` (the mean log total count of the training data), so
    that an untrained encoder starts at a sensible library size.
    """

    def __init__(
        self,
        n_input: int,
        dims: Sequence[int] = (200,),
        n_cat_list: Sequence[int] | None = None,
        dropout_rate: float = 0.1,
        log_library_offset: float = 0.0,
        use_layer_norm: bool = True,
    ):
        super().__init__()
        self.mlp = MLP(n_input, dims, n_cat_list=n_cat_list, dropout_rate=dropout_rate, use_layer_norm=use_layer_norm)
        self.head = GaussianHead(self.mlp.n_output, 1)
        self.register_buffer("log_library_offset", torch.tensor(float(log_library_offset)))

    def forward(self, x_log: torch.Tensor, *cat_list: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean and standard deviation of q(log l | x, batch)."""
        mean, std = self.head(self.mlp(x_log, *cat_list))
        return mean + self.log_library_offset, std


class ExpressionDecoder(nn.Module):
    """Decoder from ``(z, batch)`` to the parameters of a (zero-inflated) negative binomial per gene.

    Parameters
    ----------
    n_latent
        Dimension of z.
    n_output
        Number of genes.
    n_batch
        Number of batches (one-hot encoded with z).
    dims
        Hidden layer sizes.
    dispersion
        ``"gene"``: one inverse dispersion per gene; ``"gene-batch"``: per gene and batch;
        ``"gene-cell"``: predicted per gene and cell. Learned log inverse dispersions start near 0
        (``LOG_THETA_INIT_SD``), as in the original scSpecies.
    gene_likelihood
        ``"zinb"`` or ``"nb"``.
    dropout_rate
        Dropout after each hidden layer.
    use_layer_norm
        Layer norm after each hidden layer.
    """

    def __init__(
        self,
        n_latent: int,
        n_output: int,
        n_batch: int,
        dims: Sequence[int] = (200, 300),
        dispersion: Dispersion = "gene-batch",
        gene_likelihood: GeneLikelihood = "zinb",
        dropout_rate: float = 0.1,
        use_layer_norm: bool = True,
    ):
        super().__init__()
        if dispersion not in ("gene", "gene-batch", "gene-cell"):
            raise ValueError(f"dispersion must be 'gene', 'gene-batch' or 'gene-cell', not {dispersion!r}.")
        if gene_likelihood not in ("zinb", "nb"):
            raise ValueError(f"gene_likelihood must be 'zinb' or 'nb', not {gene_likelihood!r}.")
        self.dispersion = dispersion
        self.gene_likelihood = gene_likelihood
        self.n_batch = n_batch
        self.mlp = MLP(n_latent, dims, n_cat_list=[n_batch], dropout_rate=dropout_rate, use_layer_norm=use_layer_norm)
        hidden = self.mlp.n_output
        self.logits = nn.Linear(hidden, n_output)
        if dispersion == "gene":
            self.log_theta = nn.Parameter(LOG_THETA_INIT_SD * torch.randn(n_output))
        elif dispersion == "gene-batch":
            self.log_theta = nn.Parameter(LOG_THETA_INIT_SD * torch.randn(n_output, n_batch))
        else:
            self.log_theta_head = nn.Linear(hidden, n_output)
        self.zi_logits = nn.Linear(hidden, n_output) if gene_likelihood == "zinb" else None

    def hidden(self, z: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Last hidden layer for latent codes ``z`` (``(cells, n_latent)`` or ``(samples, cells, n_latent)``).

        ``batch_index`` has shape ``(cells, 1)``; FCLayers broadcasts it over a leading sample axis.
        """
        return self.mlp(z, batch_index)

    def expression_logits(self, z: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Unnormalised log expression; ``softmax`` over any gene subset gives expression renormalised over it."""
        return self.logits(self.hidden(z, batch_index))

    def log_theta_for(self, hidden: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Log inverse dispersion for each cell (rows of ``hidden``) and gene, clamped at ``LOG_THETA_MAX``."""
        if self.dispersion == "gene":
            log_theta = self.log_theta
        elif self.dispersion == "gene-batch":
            # (cells, genes); broadcasts over a leading sample axis of ``hidden``. index_select, whose
            # backward pass is an index_add, rather than indexing, whose backward is a slow accumulating index_put
            log_theta = self.log_theta.T.index_select(0, batch_index.reshape(-1).long())
        else:
            log_theta = self.log_theta_head(hidden)
        return log_theta.clamp(max=LOG_THETA_MAX)

    def outputs(self, z: torch.Tensor, batch_index: torch.Tensor) -> DecoderOutputs:
        """Logits, log inverse dispersions and zero-inflation logits (``None`` for the NB) of each cell."""
        hidden = self.hidden(z, batch_index)
        zi_logits = None if self.zi_logits is None else self.zi_logits(hidden)
        return DecoderOutputs(self.logits(hidden), self.log_theta_for(hidden, batch_index), zi_logits)

    def forward(
        self, z: torch.Tensor, batch_index: torch.Tensor, log_library: torch.Tensor
    ) -> NegativeBinomial | ZeroInflatedNegativeBinomial:
        """Return the count distribution of each cell given z, its batch and its log library size."""
        return self.distribution(self.outputs(z, batch_index), log_library)

    @staticmethod
    def distribution(
        outputs: DecoderOutputs, log_library: torch.Tensor
    ) -> NegativeBinomial | ZeroInflatedNegativeBinomial:
        """The scvi-tools count distribution of decoder ``outputs`` under log library sizes ``log_library``."""
        rho = torch.softmax(outputs.logits, dim=-1)
        mu = rho * log_library.exp()
        theta = outputs.log_theta.exp().expand_as(mu)
        if outputs.zi_logits is None:
            return NegativeBinomial(mu=mu, theta=theta, scale=rho)
        return ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=outputs.zi_logits, scale=rho)
