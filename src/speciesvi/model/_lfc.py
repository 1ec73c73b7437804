"""Log2 fold changes of homologous genes between the species of a TargetVI (scSpecies step 8)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scvi
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
from ..module._precision import fast_matmul_dtype
from ..tl._labels import HETEROGENEOUS, UNASSIGNED
from ._encoding import Posteriors, encode_posteriors

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
class _TypeCells:
    """What the decoding of one cell type needs in one species."""

    cells: LatentCells
    batches: np.ndarray
    n_cells: int
    n_inliers: int


def _labels(column: pd.Series) -> np.ndarray:
    """Labels as strings; missing, "Unassigned" and "Heterogeneous" become ``None``."""
    labels = column.astype(str).to_numpy(dtype=object)
    labels[column.isna().to_numpy() | np.isin(labels, [UNASSIGNED, HETEROGENEOUS])] = None
    return labels


class HomologLfcMixin:
    """Log2 fold changes of homologous genes between the target and the context species.

    Mixed into :class:`~speciesvi.TargetVI`; reads the context through
    :class:`~speciesvi.model._context_access.ContextAccessMixin`, needs ``self.module.decoder`` and the
    helpers of :class:`~speciesvi.model._similarity.SimilarityMixin` (homologous gene pairs, context labels).
    """

    # -- inputs ----------------------------------------------------------------------------------
    def _lfc_labels(
        self, labels_key: str | None, context_labels_key: str | None, key_added: str = "speciesvi"
    ) -> tuple[np.ndarray, np.ndarray, str, str]:
        """Target and context labels per cell (``None`` for cells without a usable label) and their keys."""
        if context_labels_key is not None and not isinstance(context_labels_key, str):
            raise TypeError(f"context_labels_key must be a string or None, got {type(context_labels_key).__name__}.")
        context_key = self._context_label_keys(context_labels_key)[0]
        if labels_key is None:
            labels_key = f"{key_added}_{context_key}"
            if labels_key not in self.adata.obs:
                raise ValueError(
                    f"The target AnnData has no obs[{labels_key!r}] (transferred labels); run "
                    f"target.transfer_labels(labels_key={context_key!r}) first or pass labels_key= (a target obs column)."
                )
        elif not isinstance(labels_key, str):
            raise TypeError(f"labels_key must be a string or None, got {type(labels_key).__name__}.")
        elif labels_key not in self.adata.obs:
            raise ValueError(
                f"The target AnnData has no obs column {labels_key!r}; available: {list(self.adata.obs.columns)}."
            )
        target_labels = _labels(self.adata.obs[labels_key])
        context_labels = _labels(self._context_label_column(context_key))
        return target_labels, context_labels, labels_key, context_key

    @staticmethod
    def _lfc_cell_types(
        cell_types: str | Sequence[str] | None, target_labels: np.ndarray, context_labels: np.ndarray
    ) -> list[str]:
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

    @staticmethod
    def _lfc_type_cells(
        posteriors: Posteriors,
        members: np.ndarray,
        confidence_level: float,
        device: torch.device | str,
    ) -> _TypeCells:
        inliers = members[mahalanobis_inliers(posteriors.z_mean[members], confidence_level)]
        if inliers.size == 0:  # cannot happen for a proper quantile, but keep the type decodable
            inliers = members
        batches, counts = np.unique(posteriors.batches[members], return_counts=True)
        held = batches[counts >= MIN_BATCH_CELLS]
        return _TypeCells(
            cells=posteriors.cells(inliers, device),
            batches=held if held.size else batches,
            n_cells=int(members.size),
            n_inliers=int(inliers.size),
        )

    def _lfc_inputs(
        self,
        labels_key: str | None,
        context_labels_key: str | None,
        cell_types: str | Sequence[str] | None,
        confidence_level: float,
        batch_size: int | None,
    ) -> tuple[list[str], dict, np.ndarray, np.ndarray, str, str]:
        if not isinstance(confidence_level, int | float) or not 0.0 < confidence_level <= 1.0:
            raise ValueError(f"confidence_level must be in (0, 1], got {confidence_level!r}.")
        if batch_size is not None and (not isinstance(batch_size, int | np.integer) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
        target_labels, context_labels, labels_key, context_key = self._lfc_labels(labels_key, context_labels_key)
        types = self._lfc_cell_types(cell_types, target_labels, context_labels)
        target_idx, context_idx = self._homologous_genes()
        target_post = encode_posteriors(self)
        context_post = self._context_posteriors()
        device = self.device
        per_type = {
            cell_type: (
                self._lfc_type_cells(target_post, np.flatnonzero(target_labels == cell_type), confidence_level, device),
                self._lfc_type_cells(
                    context_post, np.flatnonzero(context_labels == cell_type), confidence_level, device
                ),
            )
            for cell_type in types
        }
        return types, per_type, target_idx, context_idx, labels_key, context_key

    def _homologous_decoders(
        self,
        target_idx: np.ndarray,
        context_idx: np.ndarray,
        target: _TypeCells,
        context: _TypeCells,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[HomologousDecoder, HomologousDecoder]:
        return (
            HomologousDecoder(
                self.module.decoder, torch.as_tensor(target_idx), torch.as_tensor(target.batches), dtype=dtype
            ),
            HomologousDecoder(
                self._context_decoder(),
                torch.as_tensor(context_idx),
                torch.as_tensor(context.batches),
                dtype=dtype,
            ),
        )

    def _matmul_dtype(self, precision: str) -> torch.dtype:
        if precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}.")
        if precision == "auto":
            return fast_matmul_dtype(self.device)
        return torch.bfloat16 if precision == "bfloat16" else torch.float32

    def _generator(self, random_state: int | None) -> torch.Generator:
        seed = scvi.settings.seed if random_state is None else random_state
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(seed) if seed is not None else 0)
        return generator

    # -- public ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def homolog_lfc(
        self,
        labels_key: str | None = None,
        context_labels_key: str | None = None,
        cell_types: str | Sequence[str] | None = None,
        delta: float = 1.0,
        n_samples: int = 50_000,
        eps: float = 1e-6,
        confidence_level: float = 0.9,
        batch_size: int | None = None,
        random_state: int | None = None,
        progress_bar: bool = True,
        precision: Literal["auto", "float32", "bfloat16"] = "auto",
    ) -> pd.DataFrame:
        """Log2 fold changes of homologous genes, target over context, in every cell type both species hold.

        For each cell type:

        1. **Cells.** The cells of the type in each species, without outliers: cells whose posterior mean of
           z lies beyond the ``confidence_level`` chi-square quantile of the squared Mahalanobis distance
           (computed per species and type) are left out.
        2. **Draws.** ``n_samples`` latent codes, half from each species: a random cell, then z from its
           Normal posterior. Each z is decoded by *both* decoders into the mean expression per unit library
           size (``rho``; ``(1 - pi) rho`` with a zero-inflated likelihood, as a mean of library-normalised
           counts measures it), renormalised over the homologous genes. The batch effect is averaged over
           the batches of each species that hold at least 4 cells of the type, in the decoder's last hidden
           layer (for the expression logits: the average in log space).
        3. **Fold changes.** Per draw and homologous gene pair,
           ``lfc = log2(rho_target + eps) - log2(rho_context + eps)``. Reported: the median over the draws,
           and ``p``, the share of draws with ``|lfc| > delta``. The draws vary both with the posterior
           uncertainty of each cell and across the cells of the type, so ``p`` is high only for a difference
           that holds for typical cells of the type in both species.
        4. **Null.** The same on randomly re-paired genes: every 16 draws, a fresh random permutation
           replaces the context gene of every pair (or, for every other group, the target gene) by a
           random gene of the same abundance class in its own species (24 equal-frequency classes of mean
           log expression, as Seurat's control genes), so each pair is compared with many random partners
           of like abundance from both species. ``lfc_null`` and ``p_null`` show what a pair looks like when
           its pairing carries no information beyond abundance.

        ``p`` uses all draws; the medians and the null use a random subset of them (at least 512 draws,
        as many as fit 8M values: about 1,850 for 4,500 gene pairs).

        Parameters
        ----------
        labels_key
            Target ``obs`` column with the cell types. Defaults to the labels written by
            :meth:`transfer_labels` (``"speciesvi_" + context_labels_key``). "Unassigned" and
            "Heterogeneous" cells are left out.
        context_labels_key
            Context ``obs`` column with the cell types; defaults to the context model's ``labels_key``.
        cell_types
            Cell types to compare (each must have cells in both species); defaults to all types both hold.
        delta
            Threshold of ``|lfc|`` in log2 units (1: a two-fold change); non-negative.
        n_samples
            Latent draws per cell type.
        eps
            Pseudo-expression added before the logs (positive); keeps genes expressed in neither species
            near ``lfc = 0``.
        confidence_level
            Chi-square quantile of the outlier filter, in ``(0, 1]`` (1 keeps all cells).
        batch_size
            Draws decoded at once (memory: a few times ``batch_size x n_homologous x 4`` bytes);
            defaults to 512.
        random_state
            Seed of the draws; defaults to ``scvi.settings.seed``.
        progress_bar
            Show a progress bar over the cell types.
        precision
            Precision of the decoders' output-layer matrix product, the bulk of the work: ``"bfloat16"``
            (about 4x faster on GPUs and on CPUs with AMX or AVX512-BF16; logits keep about 3 significant
            digits, which moves medians by about 0.01 log2 units), ``"float32"``, or ``"auto"``: bfloat16
            where it is fast, else float32.

        Returns
        -------
        pandas.DataFrame
            One row per cell type and homologous gene pair, with the columns ``cell_type``, ``gene_target``,
            ``gene_context``, ``lfc`` (median log2 fold change), ``p`` (``P(|lfc| > delta)``), ``lfc_null``,
            ``p_null`` (the same on re-paired genes), ``rho_target``, ``rho_context`` (median decoded
            expression, renormalised over the homologous genes) and ``mu_target``, ``mu_context`` (median expected
            counts: ``rho`` times a library size drawn from the posterior of a random cell of that species and
            type). ``DataFrame.attrs["params"]`` holds the parameters and, per type, the number of cells and
            inliers in each species.

        Examples
        --------
        >>> target.transfer_labels()
        >>> lfc = target.homolog_lfc()
        >>> beta = lfc[lfc["cell_type"] == "type B pancreatic cell"]
        >>> beta[beta["p"] > 0.9].sort_values("lfc").head()  # lower in human than in mouse
        """
        if isinstance(delta, bool) or not isinstance(delta, int | float | np.floating) or not delta >= 0:
            raise ValueError(f"delta must be a non-negative number (log2 units), got {delta!r}.")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if not isinstance(eps, int | float | np.floating) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}.")
        types, per_type, target_idx, context_idx, labels_key, context_key = self._lfc_inputs(
            labels_key, context_labels_key, cell_types, confidence_level, batch_size
        )
        generator = self._generator(random_state)
        dtype = self._matmul_dtype(precision)
        target_genes = np.asarray(self.adata.var_names[target_idx], dtype=object)
        context_genes = np.asarray(self._context_var_names()[context_idx], dtype=object)
        target_decoder, context_decoder = self.module.decoder, self._context_decoder()
        frames, counts = [], {}
        with predicting(target_decoder), predicting(context_decoder):
            for cell_type in track(types, description="Homolog LFC", disable=not progress_bar):
                target, context = per_type[cell_type]
                stats = homolog_lfc_statistics(
                    *self._homologous_decoders(target_idx, context_idx, target, context, dtype),
                    target.cells,
                    context.cells,
                    n_samples=int(n_samples),
                    delta=float(delta),
                    eps=float(eps),
                    batch_size=int(batch_size or LFC_BATCH_SIZE),
                    generator=generator,
                )
                counts[cell_type] = {
                    "n_cells_target": target.n_cells,
                    "n_inliers_target": target.n_inliers,
                    "n_cells_context": context.n_cells,
                    "n_inliers_context": context.n_inliers,
                    "n_median_draws": int(stats.pop("n_median_draws")),
                }
                frame = pd.DataFrame({"gene_target": target_genes, "gene_context": context_genes, **stats})
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
        result = pd.concat(frames, ignore_index=True)[list(LFC_COLUMNS)]
        result["cell_type"] = pd.Categorical(result["cell_type"], categories=types)
        result.attrs["params"] = {
            "labels_key": labels_key,
            "context_labels_key": context_key,
            "delta": float(delta),
            "n_samples": int(n_samples),
            "eps": float(eps),
            "confidence_level": float(confidence_level),
            "precision": str(dtype).removeprefix("torch."),
            "cells": counts,
        }
        return result

    @torch.inference_mode()
    def homologous_samples(
        self,
        labels_key: str | None = None,
        context_labels_key: str | None = None,
        cell_types: str | Sequence[str] | None = None,
        n_samples: int = 5000,
        confidence_level: float = 0.9,
        batch_size: int | None = None,
        random_state: int | None = None,
    ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
        """Decoded homologous expression of every cell type in both species, draw by draw.

        The draws of :meth:`homolog_lfc` (same cells, outlier filter, batches and decoding), returned
        instead of summarised: row ``i`` of both species' tables decodes the same latent code.

        Parameters
        ----------
        labels_key, context_labels_key, cell_types, confidence_level, batch_size, random_state
            As in :meth:`homolog_lfc`.
        n_samples
            Draws per cell type.

        Returns
        -------
        target_expression, context_expression
            Dictionaries from cell type to a ``(n_samples, n_homologous)`` DataFrame of expression
            renormalised over the homologous genes (rows sum to 1); the columns are the target genes and
            their context homologs, in the same order.

        Examples
        --------
        >>> human_rho, mouse_rho = target.homologous_samples(cell_types="type B pancreatic cell", n_samples=1000)
        >>> human_rho["type B pancreatic cell"].median().nlargest(5)
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        types, per_type, target_idx, context_idx, _, _ = self._lfc_inputs(
            labels_key, context_labels_key, cell_types, confidence_level, batch_size
        )
        generator = self._generator(random_state)
        target_genes = pd.Index(self.adata.var_names[target_idx], name="gene_target")
        context_genes = pd.Index(self._context_var_names()[context_idx], name="gene_context")
        target_decoder, context_decoder = self.module.decoder, self._context_decoder()
        target_out, context_out = {}, {}
        with predicting(target_decoder), predicting(context_decoder):
            for cell_type in types:
                target, context = per_type[cell_type]
                rho_t, rho_c = sample_homologous_expression(
                    *self._homologous_decoders(target_idx, context_idx, target, context),
                    target.cells,
                    context.cells,
                    n_samples=int(n_samples),
                    batch_size=int(batch_size or LFC_BATCH_SIZE),
                    generator=generator,
                )
                target_out[cell_type] = pd.DataFrame(rho_t.numpy(), columns=target_genes)
                context_out[cell_type] = pd.DataFrame(rho_c.numpy(), columns=context_genes)
        return target_out, context_out
