"""scArches query mapping for TargetVI: new batches (donors) of the target species onto a trained model."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import ArchesMixin

from ..module import NEIGHBORS_KEY
from ._arches import check_query_obs, pad_query_genes, prepare_query_model, query_plan_kwargs
from ._calibration import reference_calibration
from ._context import ContextVI
from ._context_state import check_context_fingerprint
from ._legacy import is_legacy, upgrade_legacy
from ._save import load_model_file, preloaded, saved_var_names

logger = logging.getLogger(__name__)


@dataclass
class _Reference:
    """What ``load_query_data`` needs of a reference TargetVI, given as an object or a saved folder."""

    registry: dict
    var_names: pd.Index
    state_dict: dict
    context_model: ContextVI | None
    #: The saved folder and its (possibly completed) ``model.pt`` contents; ``None`` for a model object.
    saved: tuple[Path, dict[str, Any]] | None = None


def _reference_parts(
    cls: type,
    reference_model: Any,
    context_model: ContextVI | None,
    context_adata: AnnData | None,
    accelerator: str,
    device: int | str,
) -> _Reference:
    """Registry, genes, state dict and context model (if any) of a reference ``cls`` (object or saved folder)."""
    if isinstance(reference_model, cls):
        reference_model._check_if_trained(warn=False)
        return _Reference(
            reference_model.adata_manager.registry,
            pd.Index(reference_model.adata.var_names),
            reference_model.module.state_dict(),
            context_model if context_model is not None else reference_model.context_model,
        )
    if not isinstance(reference_model, str | os.PathLike):
        raise TypeError(
            f"reference_model must be a trained speciesvi.{cls.__name__} or the folder it was saved to, "
            f"got {type(reference_model).__name__}."
        )
    folder = Path(reference_model)
    contents = load_model_file(folder)  # a missing file, or one that would run code, is a ValueError
    registry = contents["attr_dict"]["registry_"]
    if registry.get("model_name") not in (None, cls.__name__):
        raise ValueError(f"{folder} holds a {registry.get('model_name')}, not a {cls.__name__}.")
    if is_legacy(contents):
        contents, context_model = upgrade_legacy(
            contents, folder, None, context_adata, context_model, accelerator, device
        )
    return _Reference(
        registry, pd.Index(contents["var_names"]), contents["model_state_dict"], context_model, (folder, contents)
    )


def _check_latent_size(state_dict: dict, context_model: ContextVI) -> None:
    key = "inner_encoder.head.mean.weight"
    n_latent = state_dict[key].shape[0] if key in state_dict else None
    if n_latent is not None and n_latent != context_model.module.n_latent:
        raise ValueError(
            f"The reference TargetVI has a {n_latent}-dimensional latent space, the context model "
            f"{context_model.module.n_latent}: it was trained against another context. Pass the context model "
            "the reference was trained with, or none (the reference carries its context)."
        )


class QueryMixin(ArchesMixin):
    """scArches query mapping for :class:`~speciesvi.TargetVI`: new batches of the target species.

    :meth:`prepare_query_anndata` reorders and zero-pads the query's genes to the reference's;
    :meth:`load_query_data` builds a query model that shares every reference weight and trains only the
    new batches' weights (scArches), without touching the context or the reference target model.
    """

    @classmethod
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference_model: QueryMixin | str | os.PathLike,
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
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
        if isinstance(reference_model, cls):
            var_names = pd.Index(reference_model.adata.var_names)
            reference_var = reference_model.adata.var
        elif isinstance(reference_model, str | os.PathLike):
            var_names, reference_var = pd.Index(saved_var_names(reference_model)), None
        else:
            raise TypeError(
                f"reference_model must be a speciesvi.{cls.__name__} or a saved folder, got {type(reference_model).__name__}."
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
        reference_model: QueryMixin | str | os.PathLike,
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
    ) -> QueryMixin:
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
            Optional: the reference's context model, attached to the query model (``query.context_model``) after
            checking that it is the one the reference was trained against. Not needed: the reference carries its
            context. Without it the query model gets the reference object's ``context_model`` (``None`` for a
            saved reference).
        context_adata
            Only for a reference saved by an earlier speciesvi (its context model in the sub-folder ``context/``):
            the context AnnData, to load that context model against (see :meth:`load`).
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
        and scale of the reference's cells, kept in the query model's ``novelty_calibration_`` (set here,
        once): the record of the reference's last :meth:`transfer_labels` in its AnnData
        (``uns["speciesvi_params"]["novelty_calibration"]``; for a saved reference, in the AnnData saved with
        ``save_anndata=True``), else, for a reference model object, estimated on its cells here.

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
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected the query as an AnnData object, got {type(adata).__name__}.")
        reference = _reference_parts(cls, reference_model, context_model, context_adata, accelerator, device)
        if context_model is not None:
            _check_latent_size(reference.state_dict, context_model)
        if not adata.var_names.equals(reference.var_names):
            raise ValueError(
                f"The query's {adata.n_vars} genes are not the reference's {len(reference.var_names)} genes in its "
                "order; run speciesvi.TargetVI.prepare_query_anndata(query, reference_model) first."
            )
        registry = reference.registry
        setup = registry["setup_args"]
        check_query_obs(adata, registry, setup)
        _check_query_neighbors(adata, registry, setup["neighbors_key"])
        n_reference_batches = len(
            registry["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"]["categorical_mapping"]
        )
        # a saved reference is read once, safely (and completed if of the earlier layout): scvi-tools gets those contents
        saved = reference.saved
        with preloaded(saved[0], None, saved[1]) if saved else contextlib.nullcontext():
            model = super().load_query_data(
                adata=adata,
                reference_model=str(saved[0]) if saved else reference_model,
                accelerator=accelerator,
                device=device,
                unfrozen=True,  # scvi's name-based freezing does not know speciesvi's modules: see below
                **kwargs,
            )
        if reference.context_model is not None:
            check_context_fingerprint(model.context_fingerprint_, reference.context_model, "The reference TargetVI")
            model.context_model = reference.context_model
        prepare_query_model(
            model,
            n_reference_batches,
            unfrozen=unfrozen,
            freeze_expression=freeze_expression,
            freeze_decoder_first_layer=freeze_decoder_first_layer,
            freeze_library_encoder=freeze_library_encoder,
            freeze_dropout=freeze_dropout,
        )
        inherited = model.novelty_calibration_  # a reference saved by speciesvi < 0.1 carries its own
        if inherited and inherited.get("source") == "own":
            model.novelty_calibration_ = dict(inherited, source="reference")
        else:
            estimate = (
                reference_model._estimate_novelty_calibration
                if isinstance(reference_model, cls)
                and reference_model.adata is not None
                and reference_model._context_labels_key() is not None
                else None
            )
            model.novelty_calibration_ = reference_calibration(reference_model, estimate)
        return model

    def train(self, *args, plan_config=None, plan_kwargs=None, **kwargs):
        """Train; a query model from :meth:`load_query_data` defaults to ``weight_decay=0`` (frozen weights stay put)."""
        return super().train(*args, plan_kwargs=query_plan_kwargs(self, plan_config, plan_kwargs), **kwargs)


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
