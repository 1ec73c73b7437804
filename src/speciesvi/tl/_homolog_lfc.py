"""Homolog log2 fold changes from two decoders and the two species' posteriors (scSpecies step 8)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scvi.utils import track

from ..module._lfc import (
    HomologousDecoder,
    LatentCells,
    homolog_lfc_statistics,
    mahalanobis_inliers,
    sample_homologous_expression,
)
from ..module._modes import predicting
from ._labels import HETEROGENEOUS, UNASSIGNED

logger = logging.getLogger(__name__)

#: Columns of the table returned by ``homolog_lfc``, in order.
LFC_COLUMNS = (
    "cell_type",
    "gene_target",
    "gene_context",
    "lfc",
    "p",
    "lfc_null",
    "p_null",
    "rho_target",
    "rho_context",
    "mu_target",
    "mu_context",
)
#: A batch takes part in the decoding of a cell type when it holds at least this many of its cells.
MIN_BATCH_CELLS = 4
#: Latent draws decoded at once when no ``batch_size`` is given.
LFC_BATCH_SIZE = 512


@dataclass
class Posteriors:
    """Posterior means and standard deviations of z and of the log library size, and batch codes, of cells."""

    z_mean: np.ndarray
    z_std: np.ndarray
    library_mean: np.ndarray
    library_std: np.ndarray
    batches: np.ndarray

    def cells(self, indices: np.ndarray, device: torch.device | str) -> LatentCells:
        """The posteriors of ``indices`` as float32 tensors on ``device``."""

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a[indices]), dtype=torch.float32, device=device)

        return LatentCells(tensor(self.z_mean), tensor(self.z_std), tensor(self.library_mean), tensor(self.library_std))


@dataclass
class TypeCells:
    """What the decoding of one cell type needs in one species."""

    cells: LatentCells
    batches: np.ndarray
    n_cells: int
    n_inliers: int


def usable_labels(column: pd.Series) -> np.ndarray:
    """Labels as strings; missing, "Unassigned" and "Heterogeneous" become ``None``."""
    labels = column.astype(str).to_numpy(dtype=object)
    labels[column.isna().to_numpy() | np.isin(labels, [UNASSIGNED, HETEROGENEOUS])] = None
    return labels


def shared_cell_types(
    cell_types: str | Sequence[str] | None, target_labels: np.ndarray, context_labels: np.ndarray
) -> list[str]:
    """The cell types to compare: ``cell_types`` (each must be held by both species), or all types both hold."""
    in_target = set(pd.unique(target_labels[pd.notna(target_labels)]))
    in_context = set(pd.unique(context_labels[pd.notna(context_labels)]))
    if cell_types is None:
        shared = sorted(in_target & in_context)
        if not shared:
            raise ValueError(
                "No cell type is held by both species; check labels_key and context_labels_key "
                f"(target types: {sorted(in_target)[:10]}, context types: {sorted(in_context)[:10]})."
            )
        return shared
    types = [cell_types] if isinstance(cell_types, str) else list(cell_types)
    if not types or not all(isinstance(t, str) for t in types):
        raise TypeError("cell_types must be a cell type name or a sequence of names.")
    for cell_type in types:
        missing = [name for name, held in (("target", in_target), ("context", in_context)) if cell_type not in held]
        if missing:
            raise ValueError(
                f"Cell type {cell_type!r} has no cells in the {' and '.join(missing)} species; log fold changes "
                "need cells of the type in both. Pass cell types both species hold."
            )
    return list(dict.fromkeys(types))


def type_cells(
    posteriors: Posteriors, members: np.ndarray, confidence_level: float, device: torch.device | str
) -> TypeCells:
    """The inliers of one cell type in one species (Mahalanobis filter) and the batches that hold the type."""
    inliers = members[mahalanobis_inliers(posteriors.z_mean[members], confidence_level)]
    if inliers.size == 0:  # cannot happen for a proper quantile, but keep the type decodable
        inliers = members
    batches, counts = np.unique(posteriors.batches[members], return_counts=True)
    held = batches[counts >= MIN_BATCH_CELLS]
    return TypeCells(
        cells=posteriors.cells(inliers, device),
        batches=held if held.size else batches,
        n_cells=int(members.size),
        n_inliers=int(inliers.size),
    )


def _decoders(
    target_decoder: torch.nn.Module,
    context_decoder: torch.nn.Module,
    target_genes: np.ndarray,
    context_genes: np.ndarray,
    target: TypeCells,
    context: TypeCells,
    dtype: torch.dtype,
) -> tuple[HomologousDecoder, HomologousDecoder]:
    return (
        HomologousDecoder(target_decoder, torch.as_tensor(target_genes), torch.as_tensor(target.batches), dtype=dtype),
        HomologousDecoder(
            context_decoder, torch.as_tensor(context_genes), torch.as_tensor(context.batches), dtype=dtype
        ),
    )


def cells_per_type(
    types: list[str],
    target_posteriors: Posteriors,
    context_posteriors: Posteriors,
    target_labels: np.ndarray,
    context_labels: np.ndarray,
    confidence_level: float,
    device: torch.device | str,
) -> dict[str, tuple[TypeCells, TypeCells]]:
    """The target and context :class:`TypeCells` of every cell type."""
    return {
        cell_type: (
            type_cells(target_posteriors, np.flatnonzero(target_labels == cell_type), confidence_level, device),
            type_cells(context_posteriors, np.flatnonzero(context_labels == cell_type), confidence_level, device),
        )
        for cell_type in types
    }


@torch.inference_mode()
def lfc_table(
    target_decoder: torch.nn.Module,
    context_decoder: torch.nn.Module,
    per_type: dict[str, tuple[TypeCells, TypeCells]],
    target_genes: np.ndarray,
    context_genes: np.ndarray,
    gene_names: tuple[np.ndarray, np.ndarray],
    n_samples: int,
    delta: float,
    eps: float,
    batch_size: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    progress_bar: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Homolog log2 fold changes of every cell type (see ``TargetVI.homolog_lfc`` for the method).

    Parameters
    ----------
    target_decoder, context_decoder
        The two species' decoders.
    per_type
        The cells of every type in both species (:func:`cells_per_type`).
    target_genes, context_genes
        Positions of the homologous gene pairs in the two decoders' outputs.
    gene_names
        Names of the target and the context genes of the pairs.
    n_samples, delta, eps, batch_size, generator, dtype
        As in :func:`speciesvi.module._lfc.homolog_lfc_statistics`.
    progress_bar
        Show a progress bar over the cell types.

    Returns
    -------
    table
        One row per cell type and gene pair, the columns :data:`LFC_COLUMNS`.
    cells
        Per cell type, the numbers of cells and inliers in each species and of median draws.
    """
    frames, counts = [], {}
    with predicting(target_decoder), predicting(context_decoder):
        for cell_type in track(list(per_type), description="Homolog LFC", disable=not progress_bar):
            target, context = per_type[cell_type]
            stats = homolog_lfc_statistics(
                *_decoders(target_decoder, context_decoder, target_genes, context_genes, target, context, dtype),
                target.cells,
                context.cells,
                n_samples=n_samples,
                delta=delta,
                eps=eps,
                batch_size=batch_size,
                generator=generator,
            )
            counts[cell_type] = {
                "n_cells_target": target.n_cells,
                "n_inliers_target": target.n_inliers,
                "n_cells_context": context.n_cells,
                "n_inliers_context": context.n_inliers,
                "n_median_draws": int(stats.pop("n_median_draws")),
            }
            frame = pd.DataFrame({"gene_target": gene_names[0], "gene_context": gene_names[1], **stats})
            frame.insert(0, "cell_type", cell_type)
            frames.append(frame)
            logger.info(
                "homolog_lfc %s: %d target and %d context cells (%d and %d inliers), %d of %d pairs with p > 0.9",
                cell_type,
                target.n_cells,
                context.n_cells,
                target.n_inliers,
                context.n_inliers,
                int((stats["p"] > 0.9).sum()),
                len(frame),
            )
    table = pd.concat(frames, ignore_index=True)[list(LFC_COLUMNS)]
    table["cell_type"] = pd.Categorical(table["cell_type"], categories=list(per_type))
    return table, counts


@torch.inference_mode()
def homologous_expression(
    target_decoder: torch.nn.Module,
    context_decoder: torch.nn.Module,
    per_type: dict[str, tuple[TypeCells, TypeCells]],
    target_genes: np.ndarray,
    context_genes: np.ndarray,
    gene_names: tuple[pd.Index, pd.Index],
    n_samples: int,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The decoded homologous expression of every cell type in both species, draw by draw."""
    target_out, context_out = {}, {}
    with predicting(target_decoder), predicting(context_decoder):
        for cell_type, (target, context) in per_type.items():
            rho_t, rho_c = sample_homologous_expression(
                *_decoders(
                    target_decoder, context_decoder, target_genes, context_genes, target, context, torch.float32
                ),
                target.cells,
                context.cells,
                n_samples=n_samples,
                batch_size=batch_size,
                generator=generator,
            )
            target_out[cell_type] = pd.DataFrame(rho_t.numpy(), columns=gene_names[0])
            context_out[cell_type] = pd.DataFrame(rho_c.numpy(), columns=gene_names[1])
    return target_out, context_out
