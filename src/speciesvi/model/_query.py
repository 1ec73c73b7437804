"""scArches query mapping for TargetVI: new batches (donors) of the target species onto a trained model."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS, settings
from scvi.model.base import ArchesMixin
from scvi.nn import FCLayers

from ..module import NEIGHBORS_KEY
from ._fingerprint import module_fingerprint
from ._save import load_model_file
from ._training import plan_kwargs_with_defaults

if TYPE_CHECKING:
    from ._context import ContextVI
    from ._target import TargetVI

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


# -- the mixin ---------------------------------------------------------------------------------------
def _reference_parts(
    reference_model: TargetVI | str | os.PathLike,
    context_model: ContextVI | None,
    context_adata: AnnData | None,
    accelerator: str,
    device: int | str,
) -> tuple[dict, pd.Index, dict, ContextVI, pd.DataFrame | None]:
    """Registry, genes, state dict and context model of a reference TargetVI (object or saved folder)."""
    from ._context import ContextVI
    from ._target import CONTEXT_DIR, TargetVI

    if isinstance(reference_model, TargetVI):
        if context_model is not None and context_model is not reference_model.context_model:
            raise ValueError("Pass context_model= only with a saved reference; a TargetVI object carries its own.")
        reference_model._check_if_trained(warn=False)
        var = reference_model.adata.var if reference_model.adata is not None else None
        return (
            reference_model.adata_manager.registry,
            pd.Index(reference_model.adata.var_names),
            reference_model.module.state_dict(),
            reference_model.context_model,
            var,
        )
    if not isinstance(reference_model, str | os.PathLike):
        raise TypeError(
            f"reference_model must be a trained speciesvi.TargetVI or the folder it was saved to, "
            f"got {type(reference_model).__name__}."
        )
    folder = Path(reference_model)
    contents = load_model_file(folder)  # a missing file, or one that would run code, is a ValueError
    attr_dict, var_names, state_dict = contents["attr_dict"], contents["var_names"], contents["model_state_dict"]
    registry = attr_dict["registry_"]
    if registry.get("model_name") not in (None, "TargetVI"):
        raise ValueError(f"{folder} holds a {registry.get('model_name')}, not a TargetVI.")
    if context_model is None:
        if context_adata is None:
            raise ValueError(
                "A saved reference needs its context: pass context_adata= (the context AnnData) or context_model=."
            )
        context_model = ContextVI.load(
            str(folder / CONTEXT_DIR), adata=context_adata, accelerator=accelerator, device=device
        )
    return registry, pd.Index(var_names), state_dict, context_model, None


def _check_latent_size(state_dict: dict, context_model: ContextVI) -> None:
    key = "inner_encoder.head.mean.weight"
    n_latent = state_dict[key].shape[0] if key in state_dict else None
    if n_latent is not None and n_latent != context_model.module.n_latent:
        raise ValueError(
            f"The reference TargetVI has a {n_latent}-dimensional latent space, the context model "
            f"{context_model.module.n_latent}: it was trained against another context. Pass the context model "
            "the reference was trained with (for a saved reference: context_adata= and no context_model=)."
        )


class QueryMixin(ArchesMixin):
    """scArches query mapping for :class:`~speciesvi.TargetVI`: new batches of the target species.

    :meth:`prepare_query_anndata` reorders and zero-pads the query's genes to the reference's;
    :meth:`load_query_data` builds a query model that shares every reference weight and trains only the
    new batches' weights (scArches), without touching the context or the reference target model.
    """

    @staticmethod
    def prepare_query_anndata(
        adata: AnnData,
        reference_model: TargetVI | str | os.PathLike,
        return_reference_var_names: bool = False,
        inplace: bool = True,
    ) -> AnnData | pd.Index | None:
        """Reorder the query's genes to the reference model's and pad missing ones with zero counts.

        As :meth:`scvi.model.base.ArchesMixin.prepare_query_anndata`, with a warning that says how many genes
        were padded, and the ``context_gene`` / ``homology_type`` columns of padded genes copied from the
        reference AnnData (when the reference is a model object), so that the query has the reference's
        homologous genes. Run :func:`speciesvi.pp.translate_genes` on the query before, and
        :func:`speciesvi.pp.homolog_neighbors` after (or before: ``obsm`` is kept).

        Parameters
        ----------
        adata
            The query: raw counts of new cells of the target species.
        reference_model
            The trained :class:`~speciesvi.TargetVI`, or the folder it was saved to.
        return_reference_var_names
            Only return the reference's genes.
        inplace
            Replace ``adata``'s contents by the padded data (scvi-tools' default); ``False`` returns a new AnnData
            and leaves ``adata`` as it was.

        Returns
        -------
        anndata.AnnData or pandas.Index or None
            The padded query (``inplace=False``), the reference genes (``return_reference_var_names``) or ``None``.

        Examples
        --------
        >>> query = speciesvi.TargetVI.prepare_query_anndata(new_donor, target, inplace=False)
        """
        from ._save import saved_var_names
        from ._target import TargetVI

        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
        if isinstance(reference_model, TargetVI):
            var_names = pd.Index(reference_model.adata.var_names)
            reference_var = reference_model.adata.var
        elif isinstance(reference_model, str | os.PathLike):
            var_names, reference_var = pd.Index(saved_var_names(reference_model)), None
        else:
            raise TypeError(
                f"reference_model must be a speciesvi.TargetVI or a saved folder, got {type(reference_model).__name__}."
            )
        if return_reference_var_names:
            return var_names
        if not adata.var_names.is_unique:
            raise ValueError("The query's var_names are not unique; call adata.var_names_make_unique() first.")
        if adata.var_names.equals(var_names):
            return None if inplace else adata.copy()
        padded = pad_query_genes(adata, var_names, reference_var)
        if not inplace:
            return padded
        if adata.is_view:
            raise ValueError("inplace=True cannot change a view of an AnnData; pass adata.copy() or inplace=False.")
        adata._init_as_actual(padded)
        return None

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: TargetVI | str | os.PathLike,
        context_model: ContextVI | None = None,
        context_adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        unfrozen: bool = False,
        freeze_dropout: bool = False,
        freeze_expression: bool = True,
        freeze_decoder_first_layer: bool = True,
        freeze_library_encoder: bool = False,
        **kwargs,
    ) -> TargetVI:
        """Map new batches (donors) of the target species onto a trained TargetVI, scArches-style.

        The query model copies every reference weight and adds weights for the query's batches: the
        batch one-hot columns of the first layer of the outer encoder and of the decoder, the per-batch
        dispersion and library prior. Training it (``query_model.train(...)``) updates only those, plus
        the library encoder, as :meth:`scvi.model.base.ArchesMixin.load_query_data` does for SCVI; the
        context model and the reference target model are not touched. The new batches' weights start at the
        mean of the reference batches' (a new donor starts as the average reference donor). Training defaults to
        ``weight_decay=0`` so that frozen weights stay exactly as they were.

        The query needs what a target AnnData needs (:meth:`~speciesvi.TargetVI.setup_anndata` is run
        from the reference's registry): raw counts of the reference's genes (see
        :meth:`prepare_query_anndata`), its batch column with **new** batch names, the reference's
        ``labels_key`` column if it had one, and data-level neighbours computed against the reference's
        context AnnData: ``speciesvi.pp.homolog_neighbors(query, context_adata, labels_key=...)``, with the
        reference's ``n_neighbors``. They drive the alignment term during query training.

        Parameters
        ----------
        adata
            The query AnnData (new cells of the target species).
        reference_model
            The trained :class:`~speciesvi.TargetVI`, or the folder it was saved to.
        context_model
            For a saved reference: its context model, if already loaded.
        context_adata
            For a saved reference: the context AnnData, to load the context model saved with it.
        accelerator, device
            Where the query model lives, as in scvi-tools.
        unfrozen
            Train every target weight (the inner encoder of ``alignment="inter"`` stays frozen: it is the
            context's).
        freeze_dropout
            Set dropout to 0 during query training.
        freeze_expression
            Freeze the gene columns of the outer encoder's first layer (only its batch columns train).
        freeze_decoder_first_layer
            Freeze the latent columns of the decoder's first layer (only its batch columns train).
        freeze_library_encoder
            Freeze the library encoder too (scvi-tools trains it).
        **kwargs
            Passed to :meth:`scvi.model.base.ArchesMixin.load_query_data` (``inplace_subset_query_vars``,
            ``datamodule``).

        The freezing holds for the model returned here; a query model saved and loaded again trains as an
        ordinary TargetVI. Label transfer on it calibrates the "Unassigned" rule with the novelty location
        and scale of the reference's cells (``novelty_calibration_``: from the reference's last
        :meth:`transfer_labels`, else estimated on its cells here when the reference is a model object; a
        saved reference carries it if it ran :meth:`transfer_labels` before saving).

        Returns
        -------
        TargetVI
            The query model, not yet trained (``is_trained_`` is ``False``).

        Examples
        --------
        >>> speciesvi.pp.translate_genes(new_donor, table, context=mouse)
        >>> speciesvi.TargetVI.prepare_query_anndata(new_donor, target)
        >>> speciesvi.pp.homolog_neighbors(new_donor, mouse, labels_key="cell_ontology_class")
        >>> query = speciesvi.TargetVI.load_query_data(new_donor, target)
        >>> query.train(max_epochs=40)
        >>> labels = query.transfer_labels()
        """
        from ._target import _LOADING_CONTEXT

        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected the query as an AnnData object, got {type(adata).__name__}.")
        registry, var_names, state_dict, context, reference_var = _reference_parts(
            reference_model, context_model, context_adata, accelerator, device
        )
        _check_latent_size(state_dict, context)
        if not adata.var_names.equals(var_names):
            raise ValueError(
                f"The query's {adata.n_vars} genes are not the reference's {len(var_names)} genes in its order; run "
                "speciesvi.TargetVI.prepare_query_anndata(query, reference_model) first."
            )
        setup = registry["setup_args"]
        _check_query_obs(adata, registry, setup)
        _check_query_neighbors(adata, registry, setup["neighbors_key"])
        n_reference_batches = len(
            registry["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"]["categorical_mapping"]
        )
        token = _LOADING_CONTEXT.set(context)
        reference = reference_model if not isinstance(reference_model, str | os.PathLike) else str(reference_model)
        try:
            model = super().load_query_data(
                adata=adata,
                reference_model=reference,
                accelerator=accelerator,
                device=device,
                unfrozen=True,  # scvi's name-based freezing does not know speciesvi's modules: see below
                **kwargs,
            )
        finally:
            _LOADING_CONTEXT.reset(token)
        if model.context_fingerprint_ != module_fingerprint(context.module):
            raise ValueError(
                "The reference TargetVI was trained against a different context model; pass the context model it was "
                "trained with (for a saved reference: context_adata= and no context_model=)."
            )
        prepare_query_model(
            model,
            n_reference_batches,
            unfrozen=unfrozen,
            freeze_expression=freeze_expression,
            freeze_decoder_first_layer=freeze_decoder_first_layer,
            freeze_library_encoder=freeze_library_encoder,
            freeze_dropout=freeze_dropout,
        )
        model.novelty_calibration_ = _reference_novelty_calibration(reference_model, model.novelty_calibration_)
        return model

    def train(self, *args, plan_config=None, plan_kwargs=None, **kwargs):
        """Train; a query model from :meth:`load_query_data` defaults to ``weight_decay=0`` (frozen weights stay put)."""
        return super().train(*args, plan_kwargs=query_plan_kwargs(self, plan_config, plan_kwargs), **kwargs)


def _reference_novelty_calibration(
    reference_model: TargetVI | str | os.PathLike, inherited: dict | None
) -> dict | None:
    """The reference's novelty location and scale, for the query's "Unassigned" rule (``None``: not available).

    ``inherited`` is what the query model copied from the reference (its last
    :meth:`~speciesvi.TargetVI.transfer_labels` on its own cells); without it, a reference model object with
    a labelled context is calibrated on its own cells here.
    """
    from ._target import TargetVI

    calibration = inherited if inherited and inherited.get("source") == "own" else None
    if calibration is None and isinstance(reference_model, TargetVI) and reference_model.adata is not None:
        if reference_model._context_labels_key() is not None:
            calibration = reference_model._estimate_novelty_calibration()
    if calibration is None:
        logger.warning(
            "The reference model carries no novelty calibration (run reference.transfer_labels() before saving it); "
            "the query's 'Unassigned' rule will be calibrated on the query cells alone."
        )
        return None
    return dict(calibration, source="reference")


def _check_query_obs(adata: AnnData, registry: dict, setup: dict, model_name: str = "TargetVI") -> None:
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


def _check_query_neighbors(adata: AnnData, registry: dict, neighbors_key: str) -> None:
    if neighbors_key not in adata.obsm or f"{neighbors_key}_agreement" not in adata.obs:
        raise ValueError(
            f"The query has no data-level neighbours (obsm[{neighbors_key!r}]). Run speciesvi.pp.translate_genes on "
            f"it, then speciesvi.pp.homolog_neighbors(query, context_adata, labels_key=..., key_added={neighbors_key!r}) "
            "against the reference's context AnnData."
        )
    n_reference = len(registry["field_registries"][NEIGHBORS_KEY]["state_registry"]["column_names"])
    n_query = adata.obsm[neighbors_key].shape[1]
    if n_query != n_reference:
        raise ValueError(
            f"The query has {n_query} data-level neighbours per cell, the reference {n_reference}; re-run "
            f"speciesvi.pp.homolog_neighbors on the query with n_neighbors={n_reference}."
        )
