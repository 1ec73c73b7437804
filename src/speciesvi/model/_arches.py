"""scArches query mapping helpers shared by ContextVI and TargetVI: gene padding, freezing, training defaults."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS, settings
from scvi.nn import FCLayers

from ._training import plan_kwargs_with_defaults

logger = logging.getLogger(__name__)

#: ``.var`` columns written by :func:`speciesvi.pp.translate_genes`, filled in for padded genes.
_TRANSLATION_COLUMNS = ("context_gene", "homology_type")


# -- genes -------------------------------------------------------------------------------------------
def _select_columns(matrix, index: np.ndarray, n_out: int):
    """Columns ``index`` of ``matrix`` (``-1``: a zero column), sparse in, sparse (CSR) out; dense stays dense."""
    present = np.flatnonzero(index >= 0)
    if not sparse.issparse(matrix):
        out = np.zeros((matrix.shape[0], n_out), dtype=matrix.dtype)
        out[:, present] = np.asarray(matrix)[:, index[present]]
        return out
    selector = sparse.csr_matrix(
        (np.ones(present.size, dtype=np.float32), (index[present], present)), shape=(matrix.shape[1], n_out)
    )
    return (sparse.csr_matrix(matrix) @ selector).astype(matrix.dtype)


def pad_query_genes(adata: AnnData, var_names: pd.Index, reference_var: pd.DataFrame | None = None) -> AnnData:
    """A new AnnData with the genes ``var_names`` in that order; genes the query lacks get zero counts.

    ``adata.X`` and every layer are reordered (and padded); ``obs``, ``obsm``, ``obsp`` and ``uns`` are
    copied. For padded genes, the translation columns of ``.var`` (``context_gene``, ``homology_type``) are
    taken from ``reference_var`` when it is given. A ``UserWarning`` says how many genes were padded.
    """
    index = adata.var_names.get_indexer(var_names)
    n_missing = int((index < 0).sum())
    if n_missing == len(var_names):
        raise ValueError(
            "The query shares no gene with the reference model; check that both use the same gene identifiers "
            "(symbols or Ensembl IDs) of the target species."
        )
    if n_missing:
        warnings.warn(
            f"{n_missing} of the reference model's {len(var_names)} genes ({n_missing / len(var_names):.1%}) are "
            "missing from the query; they are padded with zero counts.",
            UserWarning,
            stacklevel=settings.warnings_stacklevel,
        )
    n_dropped = adata.n_vars - (len(var_names) - n_missing)
    if n_dropped:
        logger.info("Dropping %d query genes the reference model does not have.", n_dropped)
    var = adata.var.reindex(var_names)
    if reference_var is not None and n_missing:
        missing = var_names[index < 0]
        for column in _TRANSLATION_COLUMNS:
            if column in reference_var:
                values = (
                    var[column].astype(object) if column in var else pd.Series(np.nan, index=var.index, dtype=object)
                )
                values.loc[missing] = reference_var[column].reindex(missing).astype(object)
                var[column] = values
    X = None if adata.X is None else _select_columns(adata.X, index, len(var_names))
    layers = {key: _select_columns(value, index, len(var_names)) for key, value in adata.layers.items()}
    return AnnData(
        X=X,
        obs=adata.obs.copy(),
        var=var,
        layers=layers,
        obsm={key: value.copy() for key, value in adata.obsm.items()},
        obsp={key: value.copy() for key, value in adata.obsp.items()},
        uns=adata.uns.copy(),
    )


# -- freezing ----------------------------------------------------------------------------------------
def _covariate_weight_hook(n_cov: int):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(grad)
        out[:, -n_cov:] = grad[:, -n_cov:]
        return out

    return hook


def _new_columns_hook(n_reference_batches: int):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        out[:, :n_reference_batches] = 0
        return out

    return hook


def freeze_for_query(
    module: torch.nn.Module,
    n_reference_batches: int,
    unfrozen: bool = False,
    freeze_expression: bool = True,
    freeze_decoder_first_layer: bool = True,
    freeze_library_encoder: bool = False,
    freeze_dropout: bool = False,
) -> list[str]:
    """Freeze a query TargetVAE as scArches freezes a query model; return the names of the trainable parameters.

    Trainable: the weights of the batch one-hot columns of the first layer of the outer encoder and of
    the decoder (FCLayers online-update gradient hooks, as in scvi-tools); the per-batch dispersions of the
    new batches (``dispersion="gene-batch"``); the library encoder (as scvi-tools trains ``l_encoder``)
    unless ``freeze_library_encoder``. Everything else is frozen, including the inner encoder, which is
    the context's. Reference-batch columns receive no gradient from query cells, and the hooks zero the
    rest, so with ``weight_decay=0`` the reference weights stay byte-identical.
    """
    module.requires_grad_(False)
    hooks = getattr(module, "_query_hooks", [])
    for handle in hooks:
        handle.remove()
    hooks = []
    module._query_hooks = hooks
    if freeze_dropout:
        for sub in module.modules():
            if isinstance(sub, torch.nn.Dropout):
                sub.p = 0.0
    trainable_parts = [module.outer_encoder, module.decoder, module.library_encoder]
    if getattr(module, "alignment", "inter") != "inter":
        trainable_parts.append(module.inner_encoder)
    if unfrozen:
        for part in trainable_parts:
            part.requires_grad_(True)
        return [name for name, p in module.named_parameters() if p.requires_grad]
    for part, freeze_rest in (
        (module.outer_encoder, freeze_expression),
        (module.decoder.mlp, freeze_decoder_first_layer),
    ):
        first = part.blocks[0]
        if not isinstance(first, FCLayers):  # pragma: no cover - all speciesvi blocks are FCLayers
            raise TypeError("query mapping needs FCLayers blocks.")
        linear = first.fc_layers[0][0]
        n_cov = sum(first.n_cat_list)
        if not freeze_rest:
            linear.requires_grad_(True)
        elif n_cov > 0:
            linear.weight.requires_grad_(True)
            hooks.append(linear.weight.register_hook(_covariate_weight_hook(n_cov)))
    decoder = module.decoder
    if decoder.dispersion == "gene-batch":
        decoder.log_theta.requires_grad_(True)
        hooks.append(decoder.log_theta.register_hook(_new_columns_hook(n_reference_batches)))
    if not freeze_library_encoder:
        module.library_encoder.requires_grad_(True)
    return [name for name, p in module.named_parameters() if p.requires_grad]


def start_new_batches_at_reference_mean(module: torch.nn.Module, n_reference_batches: int) -> None:
    """Initialise every new batch's weights at the mean of the reference batches' weights.

    The batch one-hot columns of the first layers of the outer encoder, the library encoder and the
    decoder, and (``dispersion="gene-batch"``) the log dispersions: a query batch then starts as the
    average reference batch instead of at random weights, which few query epochs cannot undo. Reference
    columns are left as they are.
    """
    with torch.no_grad():
        for block in (
            module.outer_encoder.blocks[0],
            module.library_encoder.mlp.blocks[0],
            module.decoder.mlp.blocks[0],
        ):
            n_cov = sum(block.n_cat_list)
            if n_cov <= n_reference_batches:
                continue
            weight = block.fc_layers[0][0].weight
            columns = weight[:, weight.shape[1] - n_cov :]
            columns[:, n_reference_batches:] = columns[:, :n_reference_batches].mean(1, keepdim=True)
        decoder = module.decoder
        if decoder.dispersion == "gene-batch" and decoder.log_theta.shape[1] > n_reference_batches:
            log_theta = decoder.log_theta
            log_theta[:, n_reference_batches:] = log_theta[:, :n_reference_batches].mean(1, keepdim=True)


def prepare_query_model(model, n_reference_batches: int, unfrozen: bool = False, **freeze_kwargs) -> list[str]:
    """Finish a query model built by scvi-tools' ``ArchesMixin.load_query_data`` (called with ``unfrozen=True``).

    The new batches start at the mean of the reference batches' weights
    (:func:`start_new_batches_at_reference_mean`), the module is frozen by :func:`freeze_for_query` (speciesvi's
    module names; scvi-tools' name-based rules do not know them), put back in training mode (dropout as
    ``freeze_dropout`` says), and the model remembers that it is a frozen query model (``weight_decay=0`` by
    default in ``train``). Returns the names of the trainable parameters.
    """
    start_new_batches_at_reference_mean(model.module, n_reference_batches)
    trainable = freeze_for_query(model.module, n_reference_batches, unfrozen=unfrozen, **freeze_kwargs)
    n_trainable = sum(p.numel() for p in model.module.parameters() if p.requires_grad)
    logger.info("Query model: %d trainable tensors (%d values): %s", len(trainable), n_trainable, trainable)
    model.module.train()  # scvi-tools leaves the module in eval mode; dropout follows freeze_dropout instead
    model.query_reference_batches_ = n_reference_batches
    model._query_frozen = not unfrozen
    return trainable


def query_plan_kwargs(model, plan_config, plan_kwargs) -> dict:
    """The training-plan arguments of ``model.train``: ``weight_decay=0`` by default for a frozen query model.

    ``plan_config`` and ``plan_kwargs`` are merged as scvi-tools merges them (``plan_kwargs`` win); a weight
    decay other than 0 for a query model from ``load_query_data`` gives a ``UserWarning``, as it moves the
    frozen reference weights.
    """
    plan_kwargs = plan_kwargs_with_defaults({}, plan_config, plan_kwargs)
    if getattr(model, "_query_frozen", False):
        if plan_kwargs.get("weight_decay", 0.0) != 0.0:
            warnings.warn(
                "weight_decay > 0 moves the frozen reference weights of a query model; use weight_decay=0.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )
        plan_kwargs.setdefault("weight_decay", 0.0)
    return plan_kwargs


def check_query_obs(adata: AnnData, registry: dict, setup: dict, model_name: str = "TargetVI") -> None:
    batch_key, labels_key = setup.get("batch_key"), setup.get("labels_key")
    if batch_key is None:
        raise ValueError(
            f"The reference {model_name} was set up without batch_key; query mapping learns weights for new batches. "
            f"Train the reference with {model_name}.setup_anndata(..., batch_key=...)."
        )
    if batch_key not in adata.obs:
        raise ValueError(
            f"The query has no obs[{batch_key!r}] (the reference's batch_key); add the batch of each cell."
        )
    known = registry["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"]["categorical_mapping"]
    clashes = sorted(set(map(str, adata.obs[batch_key].unique())) & set(map(str, known)))
    if clashes:
        raise ValueError(
            f"The query batches {clashes} already exist in the reference model. Query mapping adds new batches: "
            "rename the query's batches (e.g. prefix them with 'query_') or train the reference on these cells."
        )
    if labels_key is not None and labels_key not in adata.obs:
        raise ValueError(
            f"The reference {model_name} was set up with labels_key={labels_key!r}; the query needs obs[{labels_key!r}] "
            "too (labels are not used in training; fill unknown ones with a placeholder such as 'unknown')."
        )
