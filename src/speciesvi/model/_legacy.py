"""TargetVI folders of the earlier layout: the context model in the sub-folder ``context/``, not in ``model.pt``.

Until self-contained saves, ``TargetVI.save`` wrote the target module without the context's decoder, latent
statistics and labels, and the context model (a ContextVI) to ``context/``. Such a folder still loads: the
context model is loaded from ``context/`` (with the context AnnData, passed or saved there) and the missing state
is rebuilt from it, as ``TargetVI.__init__`` builds it. Saving the loaded model again writes the new layout.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._context import ContextVI
from ._context_state import carried_context, check_context_fingerprint

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Sub-folder in which the earlier layout kept a TargetVI's context model.
LEGACY_CONTEXT_DIR = "context"


def is_legacy(contents: dict[str, Any]) -> bool:
    """Whether a TargetVI's ``model.pt`` (as read by :func:`~speciesvi.model._save.load_model_file`) predates ``context_spec``."""
    return "context_spec" not in contents["attr_dict"]["init_params_"].get("non_kwargs", {})


def _legacy_context(
    folder: Path,
    prefix: str | None,
    context_adata: AnnData | None,
    context_model: ContextVI | None,
    accelerator: str,
    device: int | str,
) -> ContextVI:
    if context_model is not None:
        return context_model
    sub = folder / LEGACY_CONTEXT_DIR
    resave = "then save it again (target.save(folder, overwrite=True)) for a folder that loads without them."
    if not (sub / f"{prefix or ''}model.pt").is_file():
        raise ValueError(
            f"{folder} holds a TargetVI saved by an earlier speciesvi, which kept its context model in {sub}, and that "
            f"folder is missing. Restore it and pass context_adata= (the context AnnData), or pass context_model= "
            f"(the trained ContextVI the target was trained against); {resave}"
        )
    if context_adata is None and not (sub / f"{prefix or ''}adata.h5ad").is_file():
        raise ValueError(
            f"{folder} holds a TargetVI saved by an earlier speciesvi, with its context model in {sub} and no context "
            "AnnData. Pass context_adata= (the context AnnData the target was trained against, its genes as in "
            f"training) or context_model= (that trained ContextVI) to load it; {resave}"
        )
    return ContextVI.load(sub, adata=context_adata, accelerator=accelerator, device=device, prefix=prefix)


def upgrade_legacy(
    contents: dict[str, Any],
    dir_path: str | os.PathLike,
    prefix: str | None = None,
    context_adata: AnnData | None = None,
    context_model: ContextVI | None = None,
    accelerator: str = "auto",
    device: int | str = "auto",
) -> tuple[dict[str, Any], ContextVI]:
    """Complete an earlier layout's ``model.pt`` contents with the context state, rebuilt from its context model.

    Parameters
    ----------
    contents
        What :func:`~speciesvi.model._save.load_model_file` read from ``dir_path``.
    dir_path
        The saved folder (its sub-folder ``context/`` holds the context model).
    prefix
        Prefix of the saved file names.
    context_adata
        The context AnnData, to load the context model in ``context/`` against; without it, the one saved there.
    context_model
        The context model, already loaded, instead.
    accelerator, device
        Where the context model is loaded.

    Returns
    -------
    tuple
        The completed contents (``context_spec`` in the init parameters, ``context_metadata_``, the module's
        context tensors) and the context model.

    Raises
    ------
    ValueError
        If neither ``context_adata``/``context_model`` nor a context AnnData in ``context/`` is there (the message
        says what to pass), or if the context model is not the one the target was trained against.
    """
    attr_dict = dict(contents["attr_dict"])
    context_model = _legacy_context(Path(dir_path), prefix, context_adata, context_model, accelerator, device)
    check_context_fingerprint(attr_dict.get("context_fingerprint_"), context_model)
    init_params = dict(attr_dict["init_params_"])
    non_kwargs = dict(init_params["non_kwargs"])
    spec, metadata, state = carried_context(context_model, non_kwargs.get("alignment", "inter"))
    non_kwargs.update(context_model=None, context_spec=spec)
    init_params["non_kwargs"] = non_kwargs
    attr_dict.update(init_params_=init_params, context_metadata_=metadata)
    logger.info(
        "Loaded a TargetVI saved by an earlier speciesvi (context model in %s); save it again to write a folder that "
        "loads without the context model or data.",
        Path(dir_path) / LEGACY_CONTEXT_DIR,
    )
    model_state = {**state, **contents["model_state_dict"]}  # the saved inner encoder wins: it is the context's
    return {**contents, "attr_dict": attr_dict, "model_state_dict": model_state}, context_model
