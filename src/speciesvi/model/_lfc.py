"""Log2 fold changes of homologous genes between the species of a TargetVI (scSpecies step 8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scvi
import torch

from ..module._precision import fast_matmul_dtype
from ..tl._homolog_lfc import (
    LFC_BATCH_SIZE,
    TypeCells,
    cells_per_type,
    homologous_expression,
    lfc_table,
    shared_cell_types,
    usable_labels,
)
from ..tl._results import LFC_KEY, check_key_added, write_result
from ._encoding import encode_posteriors


class HomologLfcMixin:
    """Log2 fold changes of homologous genes between the target and the context species.

    Mixed into :class:`~speciesvi.TargetVI`; reads the context through
    :class:`~speciesvi.model._context_access.ContextAccessMixin` and computes with
    :mod:`speciesvi.tl._homolog_lfc`.
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
        target_labels = usable_labels(self.adata.obs[labels_key])
        context_labels = usable_labels(self._context_label_column(context_key))
        return target_labels, context_labels, labels_key, context_key

    def _lfc_inputs(
        self,
        labels_key: str | None,
        context_labels_key: str | None,
        cell_types: str | Sequence[str] | None,
        confidence_level: float,
        batch_size: int | None,
    ) -> tuple[dict[str, tuple[TypeCells, TypeCells]], np.ndarray, np.ndarray, str, str]:
        if not isinstance(confidence_level, int | float) or not 0.0 < confidence_level <= 1.0:
            raise ValueError(f"confidence_level must be in (0, 1], got {confidence_level!r}.")
        if batch_size is not None and (not isinstance(batch_size, int | np.integer) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
        target_labels, context_labels, labels_key, context_key = self._lfc_labels(labels_key, context_labels_key)
        types = shared_cell_types(cell_types, target_labels, context_labels)
        target_idx, context_idx = self._homologous_genes()
        per_type = cells_per_type(
            types,
            encode_posteriors(self),
            self._context_posteriors(),
            target_labels,
            context_labels,
            confidence_level,
            self.device,
        )
        return per_type, target_idx, context_idx, labels_key, context_key

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
        key_added: str | None = LFC_KEY,
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
        key_added
            ``.uns`` key of the target AnnData the table and its parameters are written to (read them back
            with :func:`speciesvi.tl.read_homolog_lfc`, also from an h5ad file); ``None`` writes nothing.

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
        >>> speciesvi.tl.read_homolog_lfc(human, "speciesvi_lfc")  # the same table, kept in human.uns
        """
        if isinstance(delta, bool) or not isinstance(delta, int | float | np.floating) or not delta >= 0:
            raise ValueError(f"delta must be a non-negative number (log2 units), got {delta!r}.")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if not isinstance(eps, int | float | np.floating) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}.")
        check_key_added(key_added)
        per_type, target_idx, context_idx, labels_key, context_key = self._lfc_inputs(
            labels_key, context_labels_key, cell_types, confidence_level, batch_size
        )
        dtype = self._matmul_dtype(precision)
        names = (
            np.asarray(self.adata.var_names[target_idx], dtype=object),
            np.asarray(self._context_var_names()[context_idx], dtype=object),
        )
        result, counts = lfc_table(
            self.module.decoder,
            self._context_decoder(),
            per_type,
            target_idx,
            context_idx,
            names,
            n_samples=int(n_samples),
            delta=float(delta),
            eps=float(eps),
            batch_size=int(batch_size or LFC_BATCH_SIZE),
            generator=self._generator(random_state),
            dtype=dtype,
            progress_bar=progress_bar,
        )
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
        if key_added is not None:
            write_result(self.adata, key_added, "homolog_lfc", result, result.attrs["params"])
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
        per_type, target_idx, context_idx, _, _ = self._lfc_inputs(
            labels_key, context_labels_key, cell_types, confidence_level, batch_size
        )
        return homologous_expression(
            self.module.decoder,
            self._context_decoder(),
            per_type,
            target_idx,
            context_idx,
            (
                pd.Index(self.adata.var_names[target_idx], name="gene_target"),
                pd.Index(self._context_var_names()[context_idx], name="gene_context"),
            ),
            n_samples=int(n_samples),
            batch_size=int(batch_size or LFC_BATCH_SIZE),
            generator=self._generator(random_state),
        )
