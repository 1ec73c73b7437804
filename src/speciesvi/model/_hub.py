"""scvi-hub model directories of speciesvi models (offline): the model, its metadata and a model card.

scvi-tools' :class:`scvi.hub.HubModel` wraps a folder with ``model.pt``, ``_scvi_required_metadata.json``
(:class:`scvi.hub.HubMetadata`) and a model card ``README.md``; ``HubModel(local_dir).load_model(adata=...)``
imports ``metadata.model_parent_module`` and calls ``<model class>.load(local_dir, adata=...)``. scvi-tools'
own helpers cannot write such a folder for a speciesvi model: ``HubMetadata.from_dir`` and
``HubModelCardHelper.from_dir`` read ``model.pt`` with ``weights_only=False``, and the card helper refuses model
classes it does not know. :func:`to_hub_model` writes the folder from the model object instead, with
``model_parent_module="speciesvi"`` and a card written here; loading goes through speciesvi's ``load``, so the
file is read with ``weights_only=True`` under speciesvi's allow-list.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__ as speciesvi_version
from ._legacy import LEGACY_CONTEXT_DIR
from ._save import SaveLoadMixin

if TYPE_CHECKING:
    from scvi.hub import HubModel

logger = logging.getLogger(__name__)

#: Files of a scvi-hub model folder (scvi-tools 1.4: ``scvi.hub._constants``).
METADATA_FILE = "_scvi_required_metadata.json"
CARD_FILE = "README.md"
_ANNDATA_FILES = ("adata.h5ad", "mdata.h5mu")

_PRETEXT = """\
speciesvi implements the scSpecies method (Schächter et al.) on scvi-tools: a **ContextVI** is a conditional
VAE of a well-annotated (context) species, pretrained once; a **TargetVI** models another (target) species and
places its cells in the context's latent space, for label transfer, cell and cell-type similarity and
homologous-gene log2 fold changes. The model class lives in the `speciesvi` package (`pip install speciesvi`),
not in `scvi.model`."""


def _hub_classes() -> tuple[type, type, type]:
    """``HubMetadata``, ``HubModel`` and huggingface_hub's ``ModelCardData``, or an ImportError saying what to install."""
    try:
        from huggingface_hub import ModelCardData
        from scvi.hub import HubMetadata, HubModel
    except ImportError as error:
        raise ImportError(
            "scvi-hub model folders need huggingface_hub (scvi.hub imports it): pip install 'speciesvi[hub]' "
            f"or pip install huggingface_hub ({error})."
        ) from error
    return HubMetadata, HubModel, ModelCardData


def _anndata_version() -> str:
    return importlib.metadata.version("anndata")


def _json(value: Any) -> str:
    return json.dumps(value, indent=4, default=str)


def _flat_init_params(model: SaveLoadMixin) -> dict:
    params = model.init_params_
    flat = dict(params.get("non_kwargs", {}))
    for group in params.get("kwargs", {}).values():
        flat.update(group)
    return {key: value for key, value in flat.items() if key != "context_model"}


def _loading_text(model: SaveLoadMixin, save_anndata: bool) -> str:
    name = type(model).__name__
    what = "context" if name == "ContextVI" else "target"
    loaded = (
        "hub_model.load_model()  # the AnnData is saved with the model"
        if save_anndata
        else ("hub_model.load_model(adata=adata)  # raw counts of the training genes, in the saved order")
    )
    carried = (
        "\n\nThe TargetVI carries what it needs of its context model (frozen inner encoder and decoder, the context "
        "cells' latent statistics and labels): neither the context model nor the context data is needed. The target "
        "AnnData holds its data-level neighbours (`speciesvi.pp.homolog_neighbors`), as in training."
        if name == "TargetVI"
        else ""
    )
    return (
        "```python\nfrom scvi.hub import HubModel\n\nhub_model = HubModel(local_dir)\n"
        f"{loaded}\n{what} = hub_model.model\n```\n\nor `speciesvi.{name}.load(local_dir, adata=adata)`.{carried}"
    )


def model_card_text(
    model: SaveLoadMixin,
    *,
    license_info: str = "cc-by-4.0",
    description: str | None = None,
    tissues: Sequence[str] = (),
    references: str | None = None,
    training_data_url: str | None = None,
    training_code_url: str | None = None,
    save_anndata: bool = False,
) -> str:
    """The model card (``README.md``) of a speciesvi model in scvi-hub's layout: YAML header, then Markdown.

    Parameters
    ----------
    model
        A trained :class:`~speciesvi.ContextVI` or :class:`~speciesvi.TargetVI`.
    license_info, description, tissues, references, training_data_url, training_code_url, save_anndata
        As in :func:`to_hub_model`.

    Returns
    -------
    str
        The card, readable by ``huggingface_hub.ModelCard``.
    """
    from scvi import __version__ as scvi_version

    _, _, model_card_data = _hub_classes()
    name = type(model).__name__
    tags = [
        "biology",
        "genomics",
        "single-cell",
        "speciesvi",
        f"model_cls_name:{name}",
        f"scvi_version:{model.registry.get('scvi_version', scvi_version)}",
        f"anndata_version:{_anndata_version()}",
        f"speciesvi_version:{speciesvi_version}",
        "modality:rna",
        *(f"tissue:{tissue}" for tissue in tissues),
    ]
    header = model_card_data(license=license_info, library_name="scvi-tools", tags=tags).to_yaml()
    stats = "\n".join(f"| {key} | {value} |" for key, value in dict(model.summary_stats).items())
    context_note = ""
    if name == "TargetVI":
        spec = model.init_params_["non_kwargs"]["context_spec"]
        context_note = (
            f"\n\nThe context (a ContextVI of {spec['n_obs']} cells, {spec['n_vars']} genes and {spec['n_batch']} "
            f"batches; labels `{model.context_metadata_['labels_key']}`) is carried in `model.pt`."
        )
    sections = [
        f"---\n{header}\n---",
        f"# speciesvi {name}",
        _PRETEXT,
        f"# Model Description\n\n{description or 'To be added...'}",
        f"# Loading\n\nNeeds `speciesvi` and `scvi-tools` (offline once the folder is local).\n\n"
        f"{_loading_text(model, save_anndata)}",
        "# Model Properties",
        f"Model parameters:\n\n```json\n{_json(_flat_init_params(model))}\n```",
        f"Arguments of `{name}.setup_anndata`:\n\n```json\n{_json(model.adata_manager.registry['setup_args'])}\n```"
        f"{context_note}",
        f"Summary statistics:\n\n| statistic | value |\n| --- | --- |\n{stats}",
        f"# Training\n\n**Training data url**: {training_data_url or 'Not provided by uploader'}\n\n"
        f"**Training code url**: {training_code_url or 'Not provided by uploader'}",
        f"# References\n\n{references or 'Schächter et al., scSpecies (the method); speciesvi (this implementation).'}",
    ]
    return "\n\n".join(sections) + "\n"


def to_hub_model(
    model: SaveLoadMixin,
    local_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    save_anndata: bool = False,
    license_info: str = "cc-by-4.0",
    description: str | None = None,
    tissues: Sequence[str] = (),
    references: str | None = None,
    training_data_url: str | None = None,
    training_code_url: str | None = None,
) -> HubModel:
    """Save a trained speciesvi model as an scvi-hub model folder and return its :class:`scvi.hub.HubModel`.

    The folder holds what ``scvi.hub.HubModel`` reads: ``model.pt`` (``model.save``), the metadata
    ``_scvi_required_metadata.json`` (``model_parent_module="speciesvi"``) and a model card ``README.md``
    written by speciesvi. ``HubModel(local_dir).load_model(adata=...)`` then loads the model offline through
    speciesvi's own ``load`` (``model.pt`` read with ``weights_only=True``, files that would run code refused), and
    ``hub_model.push_to_huggingface_hub(...)`` publishes it as any scvi-hub model.

    A model loads with the AnnData it was trained on (same genes, same order), passed to ``load_model(adata=...)``
    or saved with ``save_anndata=True``. A :class:`~speciesvi.TargetVI` carries what it needs of its context
    model, so its folder is as self-contained as a ContextVI's: neither the context model nor the context data is
    needed to load it (``hub_model.model.context_model`` is ``None``).

    Parameters
    ----------
    model
        A trained :class:`~speciesvi.ContextVI` or :class:`~speciesvi.TargetVI`.
    local_dir
        The folder to write (created if missing).
    overwrite
        Replace the files of an existing folder; without it an existing folder is refused.
    save_anndata
        Save the AnnData with the model (``adata.h5ad``). Without it, AnnData files left in ``local_dir`` by an
        earlier save are removed, so ``load_model`` cannot pick up stale data.
    license_info
        License of the model, for the card's header.
    description
        What the model is and how it was trained (card section "Model Description").
    tissues
        Tissues of the training data (card tags ``tissue:...``).
    references
        References for the card; defaults to scSpecies and speciesvi.
    training_data_url, training_code_url
        Where the training data and code are; scvi-tools checks ``training_data_url`` by requesting it.

    Returns
    -------
    scvi.hub.HubModel
        The folder as a ``HubModel`` (read back from disk; the model itself is loaded lazily by ``load_model``).

    Raises
    ------
    ValueError
        If ``model`` is not a trained speciesvi model or ``local_dir`` exists and ``overwrite`` is ``False``.
    ImportError
        If ``huggingface_hub`` (needed by ``scvi.hub``) is not installed: ``pip install 'speciesvi[hub]'``.

    Examples
    --------
    >>> hub_model = speciesvi.model.to_hub_model(context, "mouse_pancreas_context", tissues=["pancreas"])
    >>> from scvi.hub import HubModel
    >>> hub_model = HubModel("mouse_pancreas_context")
    >>> hub_model.load_model(adata=mouse)
    >>> mouse.obsm["X_speciesvi"] = hub_model.model.get_latent_representation()
    """
    hub_metadata, hub_model, _ = _hub_classes()
    if not isinstance(model, SaveLoadMixin) or not hasattr(model, "adata_manager"):
        raise ValueError(f"Expected a speciesvi ContextVI or TargetVI, got {type(model).__name__}.")
    if not model.is_trained_:
        raise ValueError(f"The {type(model).__name__} is not trained; train it before sharing it.")
    folder = Path(local_dir)
    if folder.exists() and not overwrite:
        raise ValueError(f"{folder} already exists. Pass overwrite=True to replace the hub model there.")
    model.save(folder, overwrite=True, save_anndata=save_anndata)
    if not save_anndata:
        for stale in [folder / name for name in _ANNDATA_FILES]:
            if stale.is_file():
                logger.info("Removing %s left by an earlier save (save_anndata=False).", stale)
                stale.unlink()
    if (folder / LEGACY_CONTEXT_DIR).is_dir():
        shutil.rmtree(folder / LEGACY_CONTEXT_DIR)  # a TargetVI saved here by an earlier speciesvi
    metadata = hub_metadata(
        scvi_version=str(model.registry.get("scvi_version")),
        anndata_version=_anndata_version(),
        model_cls_name=type(model).__name__,
        training_data_url=training_data_url,
        model_parent_module="speciesvi",
    )
    metadata.save(str(folder / METADATA_FILE), overwrite=True)
    card = model_card_text(
        model,
        license_info=license_info,
        description=description,
        tissues=tissues,
        references=references,
        training_data_url=training_data_url,
        training_code_url=training_code_url,
        save_anndata=save_anndata,
    )
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    logger.info("Wrote the scvi-hub model folder %s (%s).", folder, type(model).__name__)
    return hub_model(str(folder))
