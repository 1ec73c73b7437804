"""TargetVI: the model of the target species, aligned to a pretrained ContextVI."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField, NumericalObsField, ObsmField
from scvi.model._utils import _init_library_size
from scvi.model.base import BaseModelClass, RNASeqMixin, UnsupervisedTrainingMixin, VAEMixin
from scvi.utils import setup_anndata_dsp

from ..module import AGREEMENT_KEY, NEIGHBORS_KEY, TargetVAE
from ..module._components import Dispersion, GeneLikelihood
from ..module._target import Alignment
from ..pp._select import MANY_GENES
from ..train import AlignmentTrainingPlan
from ._context import DEFAULT_PLAN_KWARGS, ContextVI
from ._context_access import ContextAccessMixin
from ._context_state import carried_context, check_context_fingerprint, check_context_model
from ._encoding import EncodingMixin
from ._fingerprint import module_fingerprint
from ._legacy import LEGACY_CONTEXT_DIR, is_legacy, upgrade_legacy
from ._lfc import HomologLfcMixin
from ._query import QueryMixin
from ._save import SaveLoadMixin, read_model_file
from ._similarity import SimilarityMixin
from ._training import plan_kwargs_with_defaults
from ._transfer import TransferMixin
from ._validation import check_anndata

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.train._config import KwargsLike

logger = logging.getLogger(__name__)

#: η warm-up of the original scSpecies: 10 → 25 over 10 epochs.
DEFAULT_ETA_KWARGS = {"eta_start": 10.0, "eta_max": 25.0, "n_epochs_eta_warmup": 10}


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

    A TargetVI is one artefact: it carries, frozen, everything it needs from its context, so that
    :meth:`save` writes one ``model.pt`` and :meth:`load` needs neither the context model nor the context data.
    The module holds the context's inner encoder, a copy of its decoder (for :meth:`homolog_lfc`), the posterior
    statistics, batch and labels of every context cell; the model keeps the context's gene and cell names, the
    categories of its labels, its batches and a fingerprint of its weights (``context_fingerprint_``). Of the
    context AnnData's ``obs`` it keeps the categorical, string and boolean columns with at most 1,000 values (and
    always the ``labels_key``): those are the columns :meth:`transfer_labels` can transfer (``labels_key=``); make
    another column categorical before building the TargetVI to keep it. ``context_model`` is needed only to build
    the model; ``target.context_model`` is that model, or ``None`` after :meth:`load` unless one is passed there.

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
    context_spec
        Shapes of the carried context parts, derived from ``context_model`` and saved with the model; :meth:`load`
        passes it to build the model without a context model. Leave it as ``None``.
    **module_kwargs
        Passed to :class:`~speciesvi.module.TargetVAE`.

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
        context_spec: dict[str, Any] | None = None,
        **module_kwargs,
    ):
        if context_model is None and context_spec is None:
            raise ValueError("TargetVI needs a trained context model: TargetVI(adata, context_model=...).")
        carried = None
        if context_model is not None:
            check_context_model(context_model)
            carried = carried_context(context_model, alignment)
            context_spec = carried[0]
        if not 0 < top_percent <= 100:
            raise ValueError(f"top_percent must be in (0, 100], got {top_percent}.")
        super().__init__(adata)
        neighbors = self.adata_manager.get_from_registry(NEIGHBORS_KEY)
        if n_candidates < 1 or n_candidates > neighbors.shape[1]:
            raise ValueError(f"n_candidates must be between 1 and the {neighbors.shape[1]} stored neighbours.")
        self._check_neighbors_match(context_spec["adata_fingerprint"])
        self.context_model = context_model
        #: Fingerprint of the context model's weights (``load`` sets it for a saved model).
        self.context_fingerprint_ = module_fingerprint(context_model.module) if context_model is not None else None
        #: Gene and cell names, labels and batches of the context (``load`` sets it for a saved model).
        self.context_metadata_: dict | None = carried[1] if carried is not None else None
        #: The reference's novelty location and scale, for a query model (set once, by ``load_query_data``).
        self.novelty_calibration_: dict | None = None

        n_hidden_outer = tuple(n_hidden_outer or context_spec["n_hidden_outer"])
        n_batch = self.summary_stats.n_batch
        library_log_means, library_log_vars = _init_library_size(self.adata_manager, n_batch)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            context_spec=context_spec,
            alignment=alignment,
            n_candidates=n_candidates,
            agreement_cutoff=top_percent / 100.0,
            n_batch=n_batch,
            n_hidden_outer=n_hidden_outer,
            n_hidden_inner=tuple(context_spec["n_hidden_inner"]),
            n_hidden_library=tuple(n_hidden_library),
            n_hidden_decoder=tuple(n_hidden_decoder),
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            library_log_means=library_log_means,
            library_log_vars=library_log_vars,
            **module_kwargs,
        )
        if carried is not None:
            self.module.load_context_state(carried[2])
        self._model_summary_string = (
            f"TargetVI: alignment={alignment}, n_candidates={n_candidates}, top_percent={top_percent}, "
            f"{self.summary_stats.n_vars} target genes, {n_batch} batches, aligned to a ContextVI with "
            f"{context_spec['n_vars']} genes, {context_spec['n_obs']} cells and {context_spec['n_latent']} latent "
            "dimensions (carried with the model)."
        )
        self.init_params_ = self._get_init_params(locals())
        self.init_params_["non_kwargs"]["context_model"] = None  # what is needed of it is in context_spec and module

    # -- checks ----------------------------------------------------------------------------------
    def _check_neighbors_match(self, context_fingerprint: dict) -> None:
        """Refuse data-level neighbours computed against another context AnnData than the model's.

        ``context_fingerprint`` is :func:`speciesvi.pp.adata_fingerprint` of the context AnnData, from the context
        model or, for a saved model, from its ``context_spec``.
        """
        neighbors_key = self.adata_manager.registry["setup_args"]["neighbors_key"]
        params = self.adata.uns[f"{neighbors_key}_params"]
        stored = params.get("context_fingerprint")
        rows = ("n_obs", "obs_names_sha1")  # the neighbour indices point to these rows
        if stored is not None and any(stored[key] != context_fingerprint[key] for key in rows):
            raise ValueError(
                "The context model's AnnData is not the one speciesvi.pp.homolog_neighbors was run against "
                f"({stored['n_obs']} cells then, {context_fingerprint['n_obs']} cells in the model's context, or other "
                "cell names). Re-run homolog_neighbors against the context AnnData the model was built with, or build "
                "the model from the context model trained on the original one."
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
    def save(self, dir_path: str | os.PathLike, prefix: str | None = None, overwrite: bool = False, **kwargs) -> None:
        """Save the target model, with everything it carries of its context, as one ``model.pt``.

        The folder loads with :meth:`load` (or ``scvi.hub.HubModel(folder).load_model``) without the context model
        or the context data. Overwriting a folder of the earlier layout removes its ``context/`` sub-folder.

        Parameters
        ----------
        dir_path
            Folder to save into.
        prefix
            Prefix of the saved file names.
        overwrite
            Replace an earlier save.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save` (``save_anndata`` saves the target AnnData).
        """
        super().save(dir_path, prefix=prefix, overwrite=overwrite, **kwargs)
        legacy = Path(dir_path) / LEGACY_CONTEXT_DIR
        if (legacy / f"{prefix or ''}model.pt").is_file():
            logger.info("Removing %s, the context model of an earlier save: the target model now carries it.", legacy)
            shutil.rmtree(legacy)

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        context_adata: AnnData | None = None,
        context_model: ContextVI | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        backup_url: str | None = None,
        **kwargs,
    ) -> TargetVI:
        """Load a saved TargetVI; neither the context model nor the context data is needed.

        A folder saved by an earlier speciesvi (the context model in the sub-folder ``context/``, the context state
        not in ``model.pt``) loads too: its context state is rebuilt from the context model in ``context/``, which
        needs ``context_adata=`` (or ``context_model=``) unless the context AnnData was saved there. Save the loaded
        model again to convert the folder.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            The target AnnData (as set up when the model was trained); without it, the one saved in the folder
            (``save(..., save_anndata=True)``).
        context_adata
            Only for a folder of the earlier layout: the context AnnData, to load its context model against.
        context_model
            Optional: the trained context model, attached as ``target.context_model`` after checking that it is the
            one the target was trained against (a ``ValueError`` otherwise). Without it ``target.context_model`` is
            ``None`` (for a folder of the earlier layout: the context model loaded from ``context/``); no method of
            the TargetVI needs it.
        accelerator, device, prefix, backup_url
            As in :meth:`scvi.model.base.BaseModelClass.load`.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load`.

        Returns
        -------
        TargetVI
            The trained model.

        Examples
        --------
        >>> target.save("human_model", overwrite=True)
        >>> target = speciesvi.TargetVI.load("human_model", adata=human)
        >>> labels = target.transfer_labels()
        """
        contents = read_model_file(dir_path, prefix, backup_url)
        if is_legacy(contents):
            contents, context_model = upgrade_legacy(
                contents, dir_path, prefix, context_adata, context_model, accelerator, device
            )
        elif context_adata is not None:
            logger.info("context_adata is not needed to load %s (the TargetVI carries its context); ignored.", dir_path)
        model = cls._load_contents(
            dir_path, contents, adata=adata, accelerator=accelerator, device=device, prefix=prefix, **kwargs
        )
        if context_model is not None:
            check_context_fingerprint(model.context_fingerprint_, context_model)
            model.context_model = context_model
        return model
