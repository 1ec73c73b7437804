"""What a TargetVI carries of its context model, gathered once from a trained ContextVI.

Tensors go into the target module (:class:`~speciesvi.module.TargetVAE`: frozen inner encoder and decoder, per-cell
buffers); the rest is plain data saved with the model: the architecture of the context parts (``context_spec``,
an ``__init__`` argument, so that ``load`` can build an empty module) and the names and categories behind the
buffers (``context_metadata_``). Plain dicts, lists, strings and numbers only: what a ``model.pt`` read with
``weights_only=True`` may hold.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.api.types import is_bool_dtype, is_object_dtype, is_string_dtype
from scvi import REGISTRY_KEYS
from torch import nn

from ..pp import adata_fingerprint
from ._context import ContextVI
from ._fingerprint import module_fingerprint

logger = logging.getLogger(__name__)

#: Context ``obs`` columns kept with a TargetVI: categorical, string or boolean ones with at most this many values.
MAX_LABEL_CATEGORIES = 1_000


def check_context_model(context_model: Any) -> None:
    """A ``TypeError`` unless ``context_model`` is a ContextVI, a ``ValueError`` unless it is trained."""
    if not isinstance(context_model, ContextVI):
        raise TypeError(f"context_model must be a speciesvi.ContextVI, got {type(context_model).__name__}.")
    if not context_model.is_trained_:
        raise ValueError("The context model is not trained; call context_model.train() first.")


def check_context_fingerprint(expected: str | None, context_model: ContextVI, what: str = "This TargetVI") -> None:
    """A ``ValueError`` unless ``context_model``'s weights are those of the context ``expected`` fingerprints.

    Parameters
    ----------
    expected
        The target model's ``context_fingerprint_`` (:func:`~speciesvi.model._fingerprint.module_fingerprint`).
    context_model
        The context model offered.
    what
        The model, for the message.
    """
    check_context_model(context_model)
    if expected is not None and module_fingerprint(context_model.module) != expected:
        raise ValueError(
            f"{what} was trained against a different context model: pass the ContextVI it was trained with, or "
            "none (a TargetVI carries what it needs of its context)."
        )


def _dropout(module: nn.Module) -> float:
    return next((float(m.p) for m in module.modules() if isinstance(m, nn.Dropout)), 0.0)


def _widths(mlp: nn.Module) -> list[int]:
    return [int(block.fc_layers[0][0].out_features) for block in mlp.blocks]


def _plain(value: Any) -> str | int | float | bool | None:
    """A category as a plain Python value, or ``None`` if it is not a string, number or boolean."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return None


def label_columns(obs: pd.DataFrame, labels_key: str | None) -> dict[str, pd.Categorical]:
    """The context ``obs`` columns kept for label transfer, as categoricals with plain-valued categories.

    Categorical, string/object and boolean columns with at most :data:`MAX_LABEL_CATEGORIES` distinct values,
    and always ``labels_key``; numeric columns and scvi-tools' own (``_scvi_*``) are left out.
    """
    kept, skipped = {}, []
    for name in obs.columns:
        column = obs[name]
        if str(name).startswith("_scvi_"):
            continue
        if not (
            isinstance(column.dtype, pd.CategoricalDtype)
            or is_bool_dtype(column.dtype)
            or is_object_dtype(column.dtype)
            or is_string_dtype(column.dtype)
        ):
            continue
        try:
            values = pd.Categorical(column)
        except TypeError:  # unhashable values (lists ...)
            skipped.append(str(name))
            continue
        categories = [_plain(c) for c in values.categories]
        if any(c is None for c in categories) or (len(categories) > MAX_LABEL_CATEGORIES and name != labels_key):
            skipped.append(str(name))
            continue
        kept[str(name)] = values
    if skipped:
        logger.info(
            "Context obs columns not kept with the TargetVI (more than %d values, or values that are not strings, "
            "numbers or booleans): %s. Make them categorical with fewer values to transfer them.",
            MAX_LABEL_CATEGORIES,
            skipped,
        )
    return kept


def context_spec(context_model: ContextVI, n_label_columns: int) -> dict[str, Any]:
    """Architecture of the context parts a :class:`~speciesvi.module.TargetVAE` carries, read from the modules.

    Parameters
    ----------
    context_model
        A trained :class:`~speciesvi.ContextVI` with its AnnData.
    n_label_columns
        Number of context ``obs`` columns kept (see :func:`label_columns`).

    Returns
    -------
    dict
        The keys :class:`~speciesvi.module.TargetVAE` reads, plus ``n_hidden_outer`` (the target's default) and
        ``adata_fingerprint`` (of the context AnnData, to check the data-level neighbours against).
    """
    module = context_model.module
    inner, decoder = module.inner_encoder, module.decoder
    return {
        "n_obs": int(context_model.adata.n_obs),
        "n_vars": int(module.n_input),
        "n_batch": int(module.n_batch),
        "n_latent": int(module.n_latent),
        "n_inter": int(module.outer_encoder.n_output),
        "n_hidden_outer": _widths(module.outer_encoder),
        "n_hidden_inner": _widths(inner.mlp),
        "n_hidden_decoder": _widths(decoder.mlp),
        "dropout_inner": _dropout(inner),
        "dropout_decoder": _dropout(decoder),
        "gene_likelihood": decoder.gene_likelihood,
        "dispersion": decoder.dispersion,
        "layer_norm": [
            part
            for part, sub in (("inner", inner), ("decoder", decoder))
            if any(isinstance(m, nn.LayerNorm) for m in sub.modules())
        ],
        "n_label_columns": int(n_label_columns),
        "adata_fingerprint": dict(adata_fingerprint(context_model.adata)),
    }


def context_metadata(context_model: ContextVI, columns: dict[str, pd.Categorical]) -> dict[str, Any]:
    """Names and categories behind the context buffers: saved as the TargetVI's ``context_metadata_``."""
    adata = context_model.adata
    batch_state = context_model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
    labels_key = context_model.labels_key
    return {
        "var_names": [str(name) for name in adata.var_names],
        "obs_names": [str(name) for name in adata.obs_names],
        "labels_key": labels_key,
        "label_columns": [
            {"name": name, "categories": [_plain(c) for c in values.categories], "ordered": bool(values.ordered)}
            for name, values in columns.items()
        ],
        "batch_key": None if batch_state.original_key == "_scvi_batch" else str(batch_state.original_key),
        "batch_categories": [_plain(c) for c in batch_state.categorical_mapping],
    }


@torch.inference_mode()
def context_state(
    context_model: ContextVI, alignment: str, columns: dict[str, pd.Categorical]
) -> dict[str, torch.Tensor]:
    """The tensors a :class:`~speciesvi.module.TargetVAE` carries of its context, by ``state_dict`` key.

    Copies of the decoder and (``alignment="inter"``) inner encoder, and per context cell: the posterior of z, the
    outer-encoder output (``"inter"``), the posterior of the log library size, the batch and the label codes. The
    encoding passes over the context cells are those of earlier speciesvi versions (z, its standard deviation,
    inter), which each draw a data-loader seed from torch's global generator; the library pass, new, leaves the
    generator as it was, so that a seeded TargetVI trains exactly as before.
    """
    module = context_model.module
    state = {
        f"context_decoder.{key}": value.detach().cpu().clone() for key, value in module.decoder.state_dict().items()
    }
    if alignment == "inter":
        inner = module.inner_encoder.state_dict()
        state.update({f"inner_encoder.{key}": value.detach().cpu().clone() for key, value in inner.items()})
    z_mean = context_model.get_latent_representation(representation="z")
    z_std = context_model.get_latent_representation(representation="z_std")
    if alignment == "inter":
        state["context_inter"] = torch.as_tensor(context_model.get_latent_representation(representation="inter"))
    with torch.random.fork_rng(devices=[]):
        library = context_model.get_latent_representation(representation="library")
    batches = np.asarray(context_model.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).reshape(-1)
    codes = [np.asarray(values.codes, dtype=np.int32) for values in columns.values()]
    state.update(
        {
            "context_z_mean": torch.as_tensor(z_mean),
            "context_z_std": torch.as_tensor(z_std),
            "context_library_mean": torch.as_tensor(library[:, 0]).contiguous(),
            "context_library_std": torch.as_tensor(library[:, 1]).contiguous(),
            "context_batch": torch.as_tensor(batches.astype(np.int64)),
            "context_labels": torch.as_tensor(
                np.stack(codes, axis=1) if codes else np.zeros((z_mean.shape[0], 0), dtype=np.int32)
            ),
        }
    )
    return state


def carried_context(
    context_model: ContextVI, alignment: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """``context_spec``, ``context_metadata_`` and the module's context tensors, from a trained ContextVI."""
    columns = label_columns(context_model.adata.obs, context_model.labels_key)
    return (
        context_spec(context_model, len(columns)),
        context_metadata(context_model, columns),
        context_state(context_model, alignment, columns),
    )


def label_column(metadata: dict[str, Any], codes: np.ndarray, key: str) -> pd.Series:
    """One kept context ``obs`` column rebuilt from its codes (``-1``: missing), indexed by the context cell names."""
    names = [column["name"] for column in metadata["label_columns"]]
    if key not in names:
        raise ValueError(
            f"The context obs column {key!r} was not kept with this TargetVI (kept: {names}). Only categorical, string "
            f"and boolean columns with at most {MAX_LABEL_CATEGORIES} values are; make the column categorical in the "
            "context AnnData and build the TargetVI again."
        )
    column = metadata["label_columns"][names.index(key)]
    values = pd.Categorical.from_codes(
        np.asarray(codes[:, names.index(key)], dtype=np.int64),
        categories=pd.Index(column["categories"]),
        ordered=column["ordered"],
    )
    return pd.Series(values, index=pd.Index(metadata["obs_names"]), name=key)
