"""``speciesvi.model.context_from_scvi``: the public entry point of SCVI adoption, defaulting to ContextVI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._context import ContextVI
from ._from_scvi import adopt_scvi_model

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI


def context_from_scvi(
    scvi_model: SCVI,
    adata: AnnData | None = None,
    labels_key: str | None = None,
    library_epochs: int = 10,
    context_cls: type[ContextVI] | None = None,
    **train_kwargs,
) -> ContextVI:
    """Build a :class:`~speciesvi.ContextVI` from a trained :class:`scvi.model.SCVI` (e.g. an scvi-hub model).

    SCVI's encoder becomes the outer + inner encoder and its decoder the context decoder, so that a
    :class:`~speciesvi.TargetVI` can be aligned to a reference that was never trained with speciesvi.

    What carries over, exactly (up to float rounding):

    - the encoder's hidden layers → the **outer** encoder (its output, "inter", is SCVI's last hidden layer);
      batch norm is folded into the linear layers with its running statistics (SCVI's inference mode);
    - the mean head → the mean of q(z); the posterior mean of z equals SCVI's ``get_latent_representation()``;
    - the variance head → log std = log variance / 2 (std differs from SCVI's by where the 1e-4 floor is added);
    - the decoder's hidden layers, expression (softmax) head, dispersion (``gene``, ``gene-batch`` or
      ``gene-cell``) and zero-inflation head; the batch categories; the latent size; layer norm where SCVI
      had it (``use_layer_norm``).

    The **inner** encoder is an identity block (a ReLU of an identity matrix, exact on SCVI's non-negative
    hidden output, without layer norm) followed by SCVI's mean and variance heads: it is what a TargetVI
    with ``alignment="inter"`` shares.

    What does not carry over:

    - with ``use_observed_lib_size=True`` (SCVI's default) SCVI has no trained library encoder; speciesvi's
      is fitted for ``library_epochs`` epochs on the context data with every other weight frozen (the
      encoder and decoder stay byte-identical). With ``use_observed_lib_size=False`` SCVI's library
      encoder is copied;
    - batch norm as a layer: the adopted model has none (folded), so training it further differs from
      training SCVI; its dropout rate is SCVI's encoder dropout for every part;
    - the training history, SCVI's optional covariates (refused), ``latent_distribution="ln"``, ``"poisson"``
      / ``"normal"`` likelihoods, ``"gene-label"`` dispersion, batch embeddings, a decoder that injects the
      batch into more than one layer, and minified models (all refused with a ``ValueError``).

    Parameters
    ----------
    scvi_model
        A trained :class:`scvi.model.SCVI` of the context species.
    adata
        The context AnnData (raw counts, the SCVI model's genes in its order); defaults to the SCVI
        model's AnnData. It is set up with :meth:`~speciesvi.ContextVI.setup_anndata` using the SCVI
        model's layer and batch key.
    labels_key
        ``adata.obs`` column with the context labels (for label transfer); defaults to the SCVI model's.
    library_epochs
        Epochs to fit the library encoder when SCVI used observed library sizes (0: leave it untrained).
    context_cls
        The class to build (``ContextVI`` or a subclass).
    **train_kwargs
        Passed to ``train`` while fitting the library encoder (``batch_size``, ``accelerator`` ...).

    Returns
    -------
    ContextVI
        A trained context model; ``model.adopted_from_`` records the SCVI model's fingerprint.

    Examples
    --------
    >>> scvi.model.SCVI.setup_anndata(mouse, batch_key="donor", labels_key="cell_ontology_class")
    >>> reference = scvi.model.SCVI(mouse, n_latent=10)
    >>> reference.train(max_epochs=40)
    >>> context = speciesvi.ContextVI.from_scvi_model(reference)
    >>> target = speciesvi.TargetVI(human, context)
    """
    return adopt_scvi_model(
        context_cls or ContextVI,
        scvi_model,
        adata=adata,
        labels_key=labels_key,
        library_epochs=library_epochs,
        **train_kwargs,
    )
