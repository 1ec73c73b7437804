"""ContextVI: the model of the well-annotated (context) species."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model._utils import _init_library_size
from scvi.model.base import ArchesMixin, BaseModelClass, RNASeqMixin, UnsupervisedTrainingMixin, VAEMixin
from scvi.utils import setup_anndata_dsp

from ..module import ContextVAE
from ..module._components import Dispersion, GeneLikelihood
from ..pp._select import MANY_GENES
from ..train import SpeciesTrainingPlan
from ._arches import check_query_obs, prepare_query_model, query_plan_kwargs
from ._encoding import EncodingMixin
from ._pretrained import PretrainedMixin
from ._save import SaveLoadMixin, load_model_file
from ._training import plan_kwargs_with_defaults
from ._validation import check_anndata

if TYPE_CHECKING:
    from scvi.train._config import KwargsLike

logger = logging.getLogger(__name__)

#: KL warm-up of the original scSpecies: 0.1 → 1 over 10 epochs.
DEFAULT_PLAN_KWARGS = {"n_epochs_kl_warmup": 10, "min_kl_weight": 0.1, "max_kl_weight": 1.0}


class ContextVI(
    PretrainedMixin,
    EncodingMixin,
    SaveLoadMixin,
    UnsupervisedTrainingMixin,
    RNASeqMixin,
    VAEMixin,
    ArchesMixin,
    BaseModelClass,
):
    """scSpecies context model: a conditional VAE of the reference species, pretrained once.

    The encoder is split into a species-specific *outer* encoder (log1p counts and batch one-hot to an
    intermediate representation, "inter") and a shared *inner* encoder (inter to the posterior of z) that
    a :class:`~speciesvi.TargetVI` reuses. The decoder's softmax runs over all context genes; where
    species are compared it is renormalised over the homologous genes, so one trained context model
    serves any target species.

    A pretrained context loads from a folder, an archive or a URL with :meth:`load` (downloads are cached),
    and a trained scvi-tools :class:`~scvi.model.SCVI` becomes a context with :meth:`from_scvi_model`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`; raw counts.
    n_latent
        Dimension of z.
    n_hidden_outer, n_hidden_inner, n_hidden_library, n_hidden_decoder
        Hidden layer sizes of the outer, inner and library encoders and of the decoder.
    dropout_rate
        Dropout after every hidden layer.
    gene_likelihood
        ``"zinb"`` (zero-inflated negative binomial) or ``"nb"``.
    dispersion
        ``"gene"``, ``"gene-batch"`` (default, as the original) or ``"gene-cell"``.
    **module_kwargs
        Passed to :class:`~speciesvi.module.ContextVAE`.

    Examples
    --------
    >>> import speciesvi
    >>> mouse, human = speciesvi.datasets.baron_pancreas()
    >>> speciesvi.ContextVI.setup_anndata(mouse, batch_key="donor", labels_key="cell_ontology_class")
    >>> context = speciesvi.ContextVI(mouse)
    >>> context.train(max_epochs=2)
    >>> mouse.obsm["X_speciesvi"] = context.get_latent_representation()
    """

    _module_cls = ContextVAE
    _training_plan_cls = SpeciesTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        n_latent: int = 10,
        n_hidden_outer: Sequence[int] = (300,),
        n_hidden_inner: Sequence[int] = (200,),
        n_hidden_library: Sequence[int] = (200,),
        n_hidden_decoder: Sequence[int] = (200, 300),
        dropout_rate: float = 0.1,
        gene_likelihood: GeneLikelihood = "zinb",
        dispersion: Dispersion = "gene-batch",
        **module_kwargs,
    ):
        super().__init__(adata)
        n_batch = self.summary_stats.n_batch
        library_log_means, library_log_vars = _init_library_size(self.adata_manager, n_batch)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=n_batch,
            n_latent=n_latent,
            n_hidden_outer=tuple(n_hidden_outer),
            n_hidden_inner=tuple(n_hidden_inner),
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
            f"ContextVI: n_latent={n_latent}, outer={list(n_hidden_outer)}, inner={list(n_hidden_inner)}, "
            f"decoder={list(n_hidden_decoder)}, gene_likelihood={gene_likelihood}, dispersion={dispersion}, "
            f"{self.summary_stats.n_vars} genes, {n_batch} batches."
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        **kwargs,
    ) -> None:
        """%(summary)s.

        Raw counts are checked first (non-negative integers, no NaN); on any problem a ``ValueError``
        says what to fix and the AnnData is left as it was.

        Parameters
        ----------
        %(param_adata)s
        %(param_layer)s
        %(param_batch_key)s
        labels_key
            Key in ``adata.obs`` with the cell labels. They are not used in training; label transfer to a
            target species reads them later.
        """
        check_anndata(adata, layer, batch_key, labels_key)
        if adata.n_vars > MANY_GENES:
            logger.warning(
                "ContextVI.setup_anndata: %d genes (more than %d) make training slow and memory-hungry; keep each "
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
        """Train the model with scvi-tools' :class:`~scvi.train.TrainingPlan`.

        Parameters
        ----------
        max_epochs
            Passes through the data (40 as the original).
        batch_size
            Minibatch size.
        plan_config
            Arguments of :class:`~speciesvi.train.SpeciesTrainingPlan` (scvi-tools' TrainingPlan with a fused
            Adam), as a mapping or a :class:`scvi.train.TrainingPlanConfig`, as in scvi-tools.
        plan_kwargs
            More arguments of the plan; they win over ``plan_config``. Arguments set in neither take speciesvi's
            defaults: the KL weight warms up from 0.1 to 1 over 10 epochs (and ``weight_decay=0`` for a query
            model from :meth:`load_query_data`, so that its frozen weights stay put).
        **kwargs
            Everything :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` takes: ``accelerator``,
            ``devices``, ``train_size``, ``early_stopping``, ``datasplitter_kwargs``, ``trainer_config``...
        """
        plan_kwargs = query_plan_kwargs(
            self, None, plan_kwargs_with_defaults(DEFAULT_PLAN_KWARGS, plan_config, plan_kwargs)
        )
        return super().train(max_epochs=max_epochs, batch_size=batch_size, plan_kwargs=plan_kwargs, **kwargs)

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: ContextVI | str | os.PathLike,
        accelerator: str = "auto",
        device: int | str = "auto",
        unfrozen: bool = False,
        freeze_dropout: bool = False,
        freeze_expression: bool = True,
        freeze_decoder_first_layer: bool = True,
        freeze_library_encoder: bool = False,
        **kwargs,
    ) -> ContextVI:
        """Map new batches (donors) of the context species onto a trained ContextVI, scArches-style.

        The query model copies every reference weight and adds weights for the query's batches: the batch
        one-hot columns of the first layers of the outer encoder, the library encoder and the decoder, the
        per-batch dispersions and library prior. Training it (``query_model.train(...)``) updates only those,
        plus the library encoder, as :meth:`scvi.model.base.ArchesMixin.load_query_data` does for SCVI; the
        inner encoder, the decoder's other layers and the reference batches' weights stay as they were
        (``weight_decay=0`` is the default for a query model). The new batches' weights start at the mean of
        the reference batches'. scvi-tools' own freezing rules match the module names of SCVI, not speciesvi's
        (they left the new batches' dispersions frozen and let weight decay move frozen layers); this method
        freezes by speciesvi's module names instead.

        Parameters
        ----------
        adata
            The query: raw counts of new cells of the context species, with the reference's genes in its order,
            its batch column with **new** batch names, and its ``labels_key`` column if it had one.
        reference_model
            The trained :class:`~speciesvi.ContextVI`, or the folder it was saved to.
        accelerator, device
            Where the query model lives, as in scvi-tools.
        unfrozen
            Train every weight but the inner encoder's.
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

        Returns
        -------
        ContextVI
            The query model, not yet trained (``is_trained_`` is ``False``).

        Examples
        --------
        >>> query = speciesvi.ContextVI.load_query_data(new_mouse_donor, context)
        >>> query.train(max_epochs=40)
        """
        if not isinstance(adata, AnnData):
            raise TypeError(f"Expected the query as an AnnData object, got {type(adata).__name__}.")
        if isinstance(reference_model, ContextVI):
            reference_model._check_if_trained(warn=False)
            registry, reference = reference_model.adata_manager.registry, reference_model
        elif isinstance(reference_model, str | os.PathLike):
            registry = load_model_file(reference_model)["attr_dict"]["registry_"]  # a file that would run code: refused
            if registry.get("model_name") not in (None, cls.__name__):
                raise ValueError(f"{reference_model} holds a {registry.get('model_name')}, not a {cls.__name__}.")
            reference = str(reference_model)
        else:
            raise TypeError(
                f"reference_model must be a trained speciesvi.ContextVI or the folder it was saved to, "
                f"got {type(reference_model).__name__}."
            )
        check_query_obs(adata, registry, registry["setup_args"], model_name=cls.__name__)
        n_reference_batches = len(
            registry["field_registries"][REGISTRY_KEYS.BATCH_KEY]["state_registry"]["categorical_mapping"]
        )
        model = super().load_query_data(
            adata=adata,
            reference_model=reference,
            accelerator=accelerator,
            device=device,
            unfrozen=True,  # scvi's name-based freezing does not know speciesvi's modules: see prepare_query_model
            **kwargs,
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
        return model

    @property
    def labels_key(self) -> str | None:
        """The ``adata.obs`` column of the context labels, or ``None`` if none was registered."""
        state = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
        key = state.original_key
        return None if key == "_scvi_labels" else key
