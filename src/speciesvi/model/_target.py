"""TargetVI: the model of the target species, aligned to a pretrained ContextVI."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField, NumericalObsField, ObsmField
from scvi.model._utils import _init_library_size
from scvi.model.base import BaseModelClass, RNASeqMixin, UnsupervisedTrainingMixin, VAEMixin
from scvi.utils import setup_anndata_dsp

from ..module import AGREEMENT_KEY, NEIGHBORS_KEY, TargetVAE
from ..module._components import Dispersion, GeneLikelihood
from ..module._target import Alignment
from ..pp import adata_fingerprint
from ..pp._select import MANY_GENES
from ..train import AlignmentTrainingPlan
from ._context import DEFAULT_PLAN_KWARGS, ContextVI
from ._context_access import ContextAccessMixin
from ._encoding import EncodingMixin
from ._fingerprint import module_fingerprint
from ._lfc import HomologLfcMixin
from ._query import QueryMixin
from ._save import SaveLoadMixin
from ._similarity import SimilarityMixin
from ._training import plan_kwargs_with_defaults
from ._transfer import TransferMixin
from ._validation import check_anndata

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.train._config import KwargsLike

logger = logging.getLogger(__name__)

CONTEXT_DIR = "context"
#: η warm-up of the original scSpecies: 10 → 25 over 10 epochs.
DEFAULT_ETA_KWARGS = {"eta_start": 10.0, "eta_max": 25.0, "n_epochs_eta_warmup": 10}

# The context model handed to ``TargetVI.__init__`` while ``TargetVI.load`` rebuilds a saved model.
_LOADING_CONTEXT: ContextVar[ContextVI | None] = ContextVar("speciesvi_loading_context", default=None)


def _neighbor_params(adata: AnnData, neighbors_key: str) -> dict:
    missing = [
        where
        for where, present in (
            (f"obsm[{neighbors_key!r}]", neighbors_key in adata.obsm),
            (f"obs[{neighbors_key + '_agreement'!r}]", f"{neighbors_key}_agreement" in adata.obs),
            (f"uns[{neighbors_key + '_params'!r}]", f"{neighbors_key}_params" in adata.uns),
        )
        if not present
    ]
    if missing:
        raise ValueError(
            f"The target AnnData lacks {', '.join(missing)}. Run speciesvi.pp.translate_genes and "
            f"speciesvi.pp.homolog_neighbors(target, context, labels_key=..., key_added={neighbors_key!r}) first."
        )
    return adata.uns[f"{neighbors_key}_params"]


class TargetVI(
    QueryMixin,
    HomologLfcMixin,
    TransferMixin,
    SimilarityMixin,
    ContextAccessMixin,
    EncodingMixin,
    SaveLoadMixin,
    UnsupervisedTrainingMixin,
    RNASeqMixin,
    VAEMixin,
    BaseModelClass,
):
    """scSpecies target model: a VAE of another species whose cells land in a ContextVI's latent space.

    A new outer encoder, library encoder and decoder model the target genes. With ``alignment="inter"``
    (default) the context's inner encoder is copied in and frozen, as scArches freezes reference weights,
    so the target outer encoder learns to speak the context's intermediate language; with ``"latent"`` a
    fresh inner encoder is trained. During training, target cells whose data-level neighbours agree (see
    :func:`speciesvi.pp.homolog_neighbors`) are pulled towards the context candidate that best explains
    their counts (see :class:`~speciesvi.module.TargetVAE`).

    Parameters
    ----------
    adata
        Target AnnData registered with :meth:`setup_anndata`, after :func:`speciesvi.pp.homolog_neighbors`.
    context_model
        A trained :class:`~speciesvi.ContextVI`, set up on the context AnnData the neighbours were computed
        against.
    alignment
        ``"inter"`` (align outer-encoder outputs, shared frozen inner encoder) or ``"latent"`` (align z).
    n_candidates
        Data-level neighbours considered per aligned target cell (25 as the original).
    top_percent
        Cells whose data-level agreement score is below ``top_percent / 100`` are aligned (20 as the original).
    n_hidden_outer
        Hidden sizes of the target outer encoder; defaults to the context's (its last size must match).
    n_hidden_library, n_hidden_decoder, dropout_rate, gene_likelihood, dispersion
        As in :class:`~speciesvi.ContextVI`.

    Examples
    --------
    >>> import speciesvi
    >>> mouse, human = speciesvi.datasets.baron_pancreas()
    >>> speciesvi.ContextVI.setup_anndata(mouse, batch_key="donor", labels_key="cell_ontology_class")
    >>> context = speciesvi.ContextVI(mouse)
    >>> context.train(max_epochs=2)
    >>> table = speciesvi.pp.homology_table("human", "mouse")
    >>> speciesvi.pp.translate_genes(human, table, context=mouse)
    >>> speciesvi.pp.homolog_neighbors(human, mouse, labels_key="cell_ontology_class")
    >>> speciesvi.TargetVI.setup_anndata(human, batch_key="donor")
    >>> target = speciesvi.TargetVI(human, context)
    >>> target.train(max_epochs=2)
    >>> human.obsm["X_speciesvi"] = target.get_latent_representation()
    """

    _module_cls = TargetVAE
    _training_plan_cls = AlignmentTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        context_model: ContextVI | None = None,
        alignment: Alignment = "inter",
        n_candidates: int = 25,
        top_percent: float = 20.0,
        n_hidden_outer: Sequence[int] | None = None,
        n_hidden_library: Sequence[int] = (200,),
        n_hidden_decoder: Sequence[int] = (200, 300),
        dropout_rate: float = 0.1,
        gene_likelihood: GeneLikelihood = "zinb",
        dispersion: Dispersion = "gene-batch",
        **module_kwargs,
    ):
        context_model = context_model if context_model is not None else _LOADING_CONTEXT.get()
        self._check_context_model(context_model)
        if not 0 < top_percent <= 100:
            raise ValueError(f"top_percent must be in (0, 100], got {top_percent}.")
        super().__init__(adata)
        neighbors = self.adata_manager.get_from_registry(NEIGHBORS_KEY)
        if n_candidates < 1 or n_candidates > neighbors.shape[1]:
            raise ValueError(f"n_candidates must be between 1 and the {neighbors.shape[1]} stored neighbours.")
        self._check_neighbors_match(context_model)
        self.context_model = context_model
        self.context_fingerprint_ = module_fingerprint(context_model.module)
        #: Novelty location and scale of the "Unassigned" rule (set by transfer_labels / load_query_data).
        self.novelty_calibration_: dict | None = None

        n_hidden_outer = tuple(n_hidden_outer or context_model.init_params_["non_kwargs"]["n_hidden_outer"])
        n_batch = self.summary_stats.n_batch
        library_log_means, library_log_vars = _init_library_size(self.adata_manager, n_batch)
        z_mean = torch.as_tensor(context_model.get_latent_representation(representation="z"))
        z_std = torch.as_tensor(context_model.get_latent_representation(representation="z_std"))
        inter = (
            torch.as_tensor(context_model.get_latent_representation(representation="inter"))
            if alignment == "inter"
            else None
        )
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            context_z_mean=z_mean,
            context_z_std=z_std,
            context_inter=inter,
            context_inner_encoder=context_model.module.inner_encoder,
            alignment=alignment,
            n_candidates=n_candidates,
            agreement_cutoff=top_percent / 100.0,
            n_batch=n_batch,
            n_hidden_outer=n_hidden_outer,
            n_hidden_inner=tuple(context_model.init_params_["non_kwargs"]["n_hidden_inner"]),
            n_hidden_library=tuple(n_hidden_library),
            n_hidden_decoder=tuple(n_hidden_decoder),
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            library_log_means=library_log_means,
            library_log_vars=library_log_vars,
            **module_kwargs,
        )
        self._model_summary_string = (
            f"TargetVI: alignment={alignment}, n_candidates={n_candidates}, top_percent={top_percent}, "
            f"{self.summary_stats.n_vars} target genes, {n_batch} batches, aligned to a ContextVI with "
            f"{context_model.summary_stats.n_vars} genes and {context_model.module.n_latent} latent dimensions."
        )
        self.init_params_ = self._get_init_params(locals())
        self.init_params_["non_kwargs"]["context_model"] = None  # saved separately, see ``save``

    # -- checks ----------------------------------------------------------------------------------
    @staticmethod
    def _check_context_model(context_model: ContextVI | None) -> None:
        if context_model is None:
            raise ValueError("TargetVI needs a trained context model: TargetVI(adata, context_model=...).")
        if not isinstance(context_model, ContextVI):
            raise TypeError(f"context_model must be a speciesvi.ContextVI, got {type(context_model).__name__}.")
        if not context_model.is_trained_:
            raise ValueError("The context model is not trained; call context_model.train() first.")

    def _check_neighbors_match(self, context_model: ContextVI) -> None:
        """Refuse a context whose AnnData differs from the one the data-level neighbours were computed on."""
        neighbors_key = self.adata_manager.registry["setup_args"]["neighbors_key"]
        params = self.adata.uns[f"{neighbors_key}_params"]
        stored = params.get("context_fingerprint")
        current = adata_fingerprint(context_model.adata)
        rows = ("n_obs", "obs_names_sha1")  # the neighbour indices point to these rows
        if stored is not None and any(stored[key] != current[key] for key in rows):
            raise ValueError(
                "The context model's AnnData is not the one speciesvi.pp.homolog_neighbors was run against "
                f"({stored['n_obs']} cells then, {current['n_obs']} cells now, or other cell names). Re-run homolog_neighbors with "
                "this context AnnData, or pass the context model trained on the original one."
            )

    # -- setup and training ----------------------------------------------------------------------
    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        neighbors_key: str = "homolog_neighbors",
        **kwargs,
    ) -> None:
        """%(summary)s.

        Registers the counts, batch, optional labels (for evaluation only) and the data-level
        neighbours and agreement scores written by :func:`speciesvi.pp.homolog_neighbors`.

        Parameters
        ----------
        %(param_adata)s
        %(param_layer)s
        %(param_batch_key)s
        labels_key
            Key in ``adata.obs`` with target labels, if known; not used in training.
        neighbors_key
            ``key_added`` of :func:`speciesvi.pp.homolog_neighbors`.
        """
        check_anndata(adata, layer, batch_key, labels_key)
        _neighbor_params(adata, neighbors_key)
        if adata.n_vars > MANY_GENES:
            logger.warning(
                "TargetVI.setup_anndata: %d genes (more than %d) make training slow and memory-hungry; keep each "
                "species' most variable genes and their homologs with speciesvi.pp.select_genes(target, context) "
                "before setup_anndata.",
                adata.n_vars,
                MANY_GENES,
            )
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            ObsmField(NEIGHBORS_KEY, neighbors_key),
            NumericalObsField(AGREEMENT_KEY, f"{neighbors_key}_agreement"),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def train(
        self,
        max_epochs: int = 40,
        batch_size: int = 128,
        plan_config: KwargsLike | None = None,
        plan_kwargs: KwargsLike | None = None,
        **kwargs,
    ):
        """Train the target model with the alignment term.

        Parameters
        ----------
        max_epochs
            Passes through the data (40 as the original).
        batch_size
            Minibatch size.
        plan_config
            Arguments of :class:`~speciesvi.train.AlignmentTrainingPlan`, as a mapping or a config object with
            ``to_kwargs()``, as in scvi-tools.
        plan_kwargs
            More arguments of the plan; they win over ``plan_config``. Arguments set in neither take speciesvi's
            defaults: KL weight 0.1 → 1 and η 10 → 25, both over 10 epochs. ``{"eta_start": 0, "eta_max": 0}``
            trains without alignment.
        **kwargs
            Everything :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` takes (``accelerator``,
            ``devices``, ``strategy`` via ``trainer_config``, ``train_size``, ``early_stopping`` ...).
        """
        plan_kwargs = plan_kwargs_with_defaults({**DEFAULT_PLAN_KWARGS, **DEFAULT_ETA_KWARGS}, plan_config, plan_kwargs)
        return super().train(max_epochs=max_epochs, batch_size=batch_size, plan_kwargs=plan_kwargs, **kwargs)

    # -- saving and loading ----------------------------------------------------------------------
    def save(self, dir_path: str | Path, prefix: str | None = None, overwrite: bool = False, **kwargs) -> None:
        """Save the target model, with its context model in the sub-folder ``context``.

        Parameters
        ----------
        dir_path
            Folder to save into.
        prefix
            Prefix of the saved file names.
        overwrite
            Replace an earlier save.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save` (``save_anndata`` ...).
        """
        super().save(dir_path, prefix=prefix, overwrite=overwrite, **kwargs)
        self.context_model.save(Path(dir_path) / CONTEXT_DIR, prefix=prefix, overwrite=True, **kwargs)

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        adata: AnnData | None = None,
        context_adata: AnnData | None = None,
        context_model: ContextVI | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        **kwargs,
    ) -> TargetVI:
        """Load a saved TargetVI together with its context model.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            The target AnnData (as set up when the model was trained).
        context_adata
            The context AnnData, to load the saved context model against. Without it (and without
            ``context_model``) the context AnnData saved in ``context/`` (``save(..., save_anndata=True)``) is used,
            so ``scvi.hub.HubModel(local_dir).load_model()`` works on such a folder.
        context_model
            An already loaded context model to use instead; refused unless it is the one the target was
            trained against.
        accelerator, device, prefix
            As in :meth:`scvi.model.base.BaseModelClass.load`.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load`.

        Examples
        --------
        >>> target.save("human_model", overwrite=True)
        >>> target = speciesvi.TargetVI.load("human_model", adata=human, context_adata=mouse)
        """
        if context_model is None:
            saved = Path(dir_path) / CONTEXT_DIR / f"{prefix or ''}adata.h5ad"
            if context_adata is None and not saved.is_file():
                raise ValueError(
                    f"Pass context_adata= (the context AnnData) or context_model= to load a TargetVI: {saved.parent} "
                    "holds no saved context AnnData. A TargetVI saved with save_anndata=True loads its context from "
                    "there (e.g. through scvi.hub.HubModel(local_dir).load_model()); for a hub folder without it, use "
                    "speciesvi.TargetVI.load(hub_model.local_dir, adata=target_adata, context_adata=context_adata)."
                )
            context_model = ContextVI.load(
                str(Path(dir_path) / CONTEXT_DIR),
                adata=context_adata,
                accelerator=accelerator,
                device=device,
                prefix=prefix,
            )
        token = _LOADING_CONTEXT.set(context_model)
        try:
            model = super().load(
                str(dir_path), adata=adata, accelerator=accelerator, device=device, prefix=prefix, **kwargs
            )
        finally:
            _LOADING_CONTEXT.reset(token)
        if model.context_fingerprint_ != module_fingerprint(context_model.module):
            raise ValueError(
                "This TargetVI was trained against a different context model; load it with the context model "
                f"saved in {Path(dir_path) / CONTEXT_DIR} (pass context_adata= and no context_model=)."
            )
        return model
