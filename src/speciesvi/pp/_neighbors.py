"""Data-level neighbours: nearest context cells of every target cell on the homologous genes, and label votes."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.preprocessing import normalize

from ._checks import check_counts, check_obs_key, check_unique_var_names, get_matrix
from ._fingerprint import adata_fingerprint
from ._genes import select_variable_genes
from ._homologs import homologous_gene_positions
from ._knn import choose_method, cosine_knn

if TYPE_CHECKING:
    from anndata import AnnData

    from ._knn import KnnMethod

logger = logging.getLogger(__name__)

MIN_HOMOLOGOUS_GENES = 50
_CHUNK_ROWS = 10_000


def homologous_genes(target: AnnData, context: AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Target genes whose ``var["context_gene"]`` is a context gene, and those context genes, in target order."""
    target_idx, context_idx = homologous_gene_positions(target.var, context.var_names)
    t_genes = target.var_names[target_idx].to_numpy(dtype=object)
    c_genes = context.var_names[context_idx].astype(str).to_numpy(dtype=object)
    if len(c_genes) != len(set(c_genes)):
        dupes = pd.Index(c_genes)[pd.Index(c_genes).duplicated()].unique()
        raise ValueError(
            f"{len(dupes)} context genes are the homolog of several target genes (e.g. {list(dupes[:5])}); "
            "target.var['context_gene'] must be one-to-one: rebuild it with speciesvi.pp.translate_genes."
        )
    return t_genes, c_genes


def _columns_as_csr(matrix, columns: np.ndarray) -> sparse.csr_matrix:
    """A CSR copy of the selected columns; dense or backed input is converted in row chunks."""
    if sparse.issparse(matrix):
        return sparse.csr_matrix(matrix[:, columns])
    blocks = []
    for start in range(0, matrix.shape[0], _CHUNK_ROWS):
        block = matrix[start : start + _CHUNK_ROWS]  # dense, h5py or backed sparse rows
        block = block[:, columns] if sparse.issparse(block) else np.asarray(block)[:, columns]
        blocks.append(sparse.csr_matrix(block))
    return sparse.vstack(blocks, format="csr")


def _log1p_unit_rows(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """log1p, then L2-normalised rows (so cosine distance = 1 - dot product), in place on a float32 copy."""
    out = sparse.csr_matrix(counts, dtype=np.float32, copy=True)
    np.log1p(out.data, out=out.data)
    out.eliminate_zeros()
    return normalize(out, norm="l2", copy=False)


def _unit_rows_on_genes(
    target: AnnData,
    context: AnnData,
    layer: str | None,
    context_layer: str | None,
    t_genes: np.ndarray,
    c_genes: np.ndarray,
    n_top_genes: int | None,
) -> tuple[np.ndarray, np.ndarray, sparse.csr_matrix, sparse.csr_matrix]:
    """Checked counts of the homologous genes (optionally the most variable ones), as log1p unit rows."""
    target_matrix = get_matrix(target, layer, "target")
    context_matrix = get_matrix(context, context_layer, "context")
    logger.info("homolog_neighbors: %d homologous genes", len(t_genes))
    target_counts = _columns_as_csr(target_matrix, target.var_names.get_indexer(t_genes))
    check_counts(target_counts, "target" if layer is None else f"target.layers[{layer!r}]")
    context_counts = _columns_as_csr(context_matrix, context.var_names.get_indexer(c_genes))
    check_counts(context_counts, "context" if context_layer is None else f"context.layers[{context_layer!r}]")
    if n_top_genes is not None and n_top_genes < len(t_genes):
        keep = select_variable_genes(target_counts, context_counts, n_top_genes)
        t_genes, c_genes = t_genes[keep], c_genes[keep]
        target_counts, context_counts = target_counts[:, keep], context_counts[:, keep]
    return t_genes, c_genes, _log1p_unit_rows(target_counts), _log1p_unit_rows(context_counts)


def _rows(matrix: sparse.csr_matrix, rows: np.ndarray) -> sparse.csr_matrix:
    """``matrix[rows]`` without a copy when all rows are kept."""
    return matrix if len(rows) == matrix.shape[0] else matrix[rows]


def _vote(
    neighbors: np.ndarray, distances: np.ndarray, codes: np.ndarray, n_categories: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority label among the voters of each row; ties go to the label whose first voter is nearest.

    Returns the winning code (-1 where no voter has a label), its vote count and the mean distance of the cells
    that voted for it.
    """
    n_rows, n_vote = neighbors.shape
    labels = np.where(neighbors >= 0, codes[np.maximum(neighbors, 0)], -1)
    winner = np.full(n_rows, -1, dtype=np.int64)
    votes = np.zeros(n_rows, dtype=np.int64)
    for start in range(0, n_rows, _CHUNK_ROWS):
        block = labels[start : start + _CHUNK_ROWS]
        rows = np.arange(block.shape[0])
        counts = np.zeros((block.shape[0], n_categories + 1), dtype=np.int64)
        first = np.full((block.shape[0], n_categories + 1), n_vote, dtype=np.int64)
        for j in range(n_vote - 1, -1, -1):
            np.add.at(counts, (rows, block[:, j]), 1)
            first[rows, block[:, j]] = j
        counts[:, -1] = 0  # index -1: neighbours without a label never win
        key = counts * (n_vote + 1) + (n_vote - first)
        best = key.argmax(axis=1)
        votes[start : start + len(rows)] = counts[rows, best]
        winner[start : start + len(rows)] = np.where(counts[rows, best] > 0, best, -1)
    is_winner = (labels == winner[:, None]) & (winner[:, None] >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_distance = (distances * is_winner).sum(axis=1) / is_winner.sum(axis=1)
    return winner, votes, np.nan_to_num(mean_distance, nan=np.inf)


def _agreement(winner: np.ndarray, votes: np.ndarray, mean_distance: np.ndarray) -> np.ndarray:
    """Rank score within each predicted label: 1 - (rank + 1) / n_group, ranks ascending by agreement.

    Cells are sorted ascending by vote count and, among equal counts, by descending mean distance of their
    voters, so the best-agreeing cells of every label score near 0. Cells without a prediction score 1.
    """
    score = np.ones(len(winner), dtype=np.float64)
    order = np.lexsort((-mean_distance, votes, winner))
    sorted_groups = winner[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    group_start = np.repeat(starts, sizes)
    group_size = np.repeat(sizes, sizes)
    rank = np.arange(len(order)) - group_start
    score[order] = 1.0 - (rank + 1) / group_size
    score[winner < 0] = 1.0
    return score


def homolog_neighbors(
    target: AnnData,
    context: AnnData,
    labels_key: str,
    n_neighbors: int = 250,
    n_vote: int = 25,
    layer: str | None = None,
    key_added: str = "homolog_neighbors",
    *,
    context_layer: str | None = None,
    n_top_genes: int | None = 4000,
    method: KnnMethod = "auto",
    n_jobs: int | None = None,
    random_state: int | None = 0,
) -> None:
    """Nearest context cells of every target cell on the homologous genes, and the data-level label votes.

    Counts of the homologous genes H (target genes whose ``var["context_gene"]`` is among ``context.var_names``)
    are log1p-transformed and compared by cosine distance. Everything stays sparse: rows are L2-normalised so the
    cosine distance is one minus a sparse dot product, and no whole matrix is densified. Small inputs use exact
    search; large ones take candidates from a truncated-SVD sketch (brute force, or pynndescent for very large
    inputs) and re-rank them by the exact cosine distance.

    Parameters
    ----------
    target
        Target AnnData with raw counts, after :func:`~speciesvi.pp.translate_genes`.
    context
        Context AnnData with raw counts and cell labels.
    labels_key
        Column of ``context.obs`` with the labels to vote on (e.g. cell types). Missing labels do not vote.
    n_neighbors
        Number of nearest context cells stored per target cell (the alignment's candidates).
    n_vote
        Number of nearest context cells whose majority label is the data-level prediction.
    layer
        Layer of ``target`` with raw counts; ``None`` uses ``.X``.
    key_added
        Prefix of the keys written to ``target``.
    context_layer
        Layer of ``context`` with raw counts; ``None`` uses ``.X``.
    n_top_genes
        Use only this many highly variable homologous genes; ``None`` uses all of H. Genes are ranked as
        :func:`scanpy.pp.highly_variable_genes` (Seurat flavour) ranks them with the species as batches: first by
        the number of species in which they are highly variable, then by mean normalised dispersion. The
        default, 4,000, is the gene count of the original scSpecies; selecting genes variable in both species
        favours cell-type markers shared by the species. Computed on private copies; the inputs are not changed.
    method
        Neighbour search: ``"exact"`` (scikit-learn brute force on the sparse rows), ``"sketch"`` (candidates by
        brute force on a 100-dimensional truncated SVD of both datasets, re-ranked exactly), ``"pynndescent"``
        (candidates by pynndescent on that sketch, re-ranked exactly) or ``"auto"``: exact up to 4e8 target x
        context cell pairs, sketch up to 4e10, pynndescent beyond.
    n_jobs
        Threads for the neighbour search; ``None`` or ``-1``: all usable cores.
    random_state
        Seed of pynndescent's random projection trees.

    Returns
    -------
    Nothing; writes to ``target``:

    - ``obsm[key_added]``: ``int32`` array ``n_obs x n_neighbors`` of context row indices, nearest first (``-1``
      for target cells with no counts on the genes used);
    - ``obs[key_added + "_label"]``: majority context label among the first ``n_vote`` neighbours (categorical;
      ties go to the label whose first voter is nearest);
    - ``obs[key_added + "_agreement"]``: within each predicted label, cells sorted ascending by the vote count of
      the winning label (ties: farther voters first) get the score ``1 - (rank + 1) / n_group``, so the
      best-agreeing cells of every label score near 0; the alignment uses cells with score < 0.2. Cells without a
      prediction score 1;
    - ``uns[key_added + "_params"]``: the parameters, ``labels_key``, the genes used on both sides and
      ``context_fingerprint`` (:func:`~speciesvi.pp.adata_fingerprint` of ``context`` on its genes used).

    On error neither AnnData is changed.

    Examples
    --------
    >>> import speciesvi
    >>> mouse, human = speciesvi.datasets.baron_pancreas()
    >>> table = speciesvi.pp.homology_table("human", "mouse")
    >>> speciesvi.pp.translate_genes(human, table, context=mouse)
    >>> speciesvi.pp.homolog_neighbors(human, mouse, labels_key="cell_ontology_class")
    >>> human.obsm["homolog_neighbors"].shape
    (2142, 250)
    >>> round(float((human.obs["homolog_neighbors_agreement"] < 0.2).mean()), 1)
    0.2
    """
    if not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive integer, not {n_neighbors!r}.")
    if not isinstance(n_vote, int | np.integer) or not 1 <= n_vote <= n_neighbors:
        raise ValueError(f"n_vote must be an integer between 1 and n_neighbors={n_neighbors}, not {n_vote!r}.")
    if n_top_genes is not None and (not isinstance(n_top_genes, int | np.integer) or n_top_genes < 1):
        raise ValueError(f"n_top_genes must be a positive integer or None, not {n_top_genes!r}.")
    if target.n_obs == 0 or context.n_obs == 0:
        raise ValueError(
            f"homolog_neighbors needs cells in both AnnData objects (target {target.n_obs}, context "
            f"{context.n_obs}); pass non-empty data."
        )
    check_obs_key(context, labels_key, "context")
    check_unique_var_names(target, "target")
    check_unique_var_names(context, "context")
    if n_neighbors > context.n_obs:
        raise ValueError(f"n_neighbors={n_neighbors} exceeds the {context.n_obs} context cells; lower n_neighbors.")
    knn_method = choose_method(method, target.n_obs, context.n_obs)
    t_genes, c_genes = homologous_genes(target, context)
    if len(t_genes) == 0:
        raise ValueError(
            "No homologous genes: no target.var['context_gene'] is among context.var_names. Check that both use "
            "gene symbols of their species and that translate_genes used a table for these two species."
        )
    if len(t_genes) < MIN_HOMOLOGOUS_GENES:
        warnings.warn(
            f"Only {len(t_genes)} homologous genes are shared by target and context; data-level neighbours will "
            "be unreliable.",
            UserWarning,
            stacklevel=2,
        )
    t_genes, c_genes, target_unit, context_unit = _unit_rows_on_genes(
        target, context, layer, context_layer, t_genes, c_genes, n_top_genes
    )
    target_ok = np.flatnonzero(target_unit.getnnz(axis=1) > 0)
    context_ok = np.flatnonzero(context_unit.getnnz(axis=1) > 0)
    if len(target_ok) == 0:
        raise ValueError(
            f"No target cell has counts on the {len(t_genes)} homologous genes used; check that target holds raw "
            "counts of the genes translate_genes mapped, or pass n_top_genes=None to use all homologous genes."
        )
    if len(context_ok) < n_neighbors:
        raise ValueError(
            f"Only {len(context_ok)} context cells have counts on the {len(c_genes)} genes used, fewer than "
            f"n_neighbors={n_neighbors}."
        )
    for name, n_empty in (("target", target.n_obs - len(target_ok)), ("context", context.n_obs - len(context_ok))):
        if n_empty:
            warnings.warn(
                f"{n_empty} {name} cells have no counts on the {len(t_genes)} genes used; "
                + ("they get no neighbours (-1)." if name == "target" else "they are left out of the search."),
                UserWarning,
                stacklevel=2,
            )

    logger.info(
        "homolog_neighbors: %s cosine search, %d target x %d context cells, k=%d",
        knn_method,
        len(target_ok),
        len(context_ok),
        n_neighbors,
    )
    found, distances = cosine_knn(
        _rows(target_unit, target_ok),
        _rows(context_unit, context_ok),
        n_neighbors,
        knn_method,
        n_jobs=n_jobs,
        random_state=random_state,
    )
    del target_unit, context_unit
    neighbors = np.full((target.n_obs, n_neighbors), -1, dtype=np.int32)
    neighbors[target_ok] = context_ok[found].astype(np.int32)
    vote_distances = np.full((target.n_obs, n_vote), np.inf, dtype=np.float32)
    vote_distances[target_ok] = distances[:, :n_vote]

    labels = context.obs[labels_key]
    categories = labels.cat.categories if isinstance(labels.dtype, pd.CategoricalDtype) else None
    labels = pd.Categorical(labels, categories=categories)
    winner, votes, mean_distance = _vote(
        neighbors[:, :n_vote], vote_distances, labels.codes.astype(np.int64), len(labels.categories)
    )
    agreement = _agreement(winner, votes, mean_distance)
    predicted = pd.Categorical.from_codes(winner, categories=labels.categories)

    target.obsm[key_added] = neighbors
    target.obs[key_added + "_label"] = predicted
    target.obs[key_added + "_agreement"] = agreement
    target.uns[key_added + "_params"] = {
        "labels_key": labels_key,
        "n_neighbors": int(n_neighbors),
        "n_vote": int(n_vote),
        "layer": layer,
        "context_layer": context_layer,
        "metric": "cosine",
        "transform": "log1p",
        "n_top_genes": None if n_top_genes is None else int(n_top_genes),
        "method": knn_method,
        "random_state": random_state,
        "target_genes": [str(g) for g in t_genes],
        "context_genes": [str(g) for g in c_genes],
        "context_fingerprint": adata_fingerprint(context, genes=c_genes),
    }
    predicted_share = pd.Series(predicted).value_counts(normalize=True)
    logger.info(
        "homolog_neighbors: wrote obsm[%r], obs[%r], obs[%r]; predicted labels: %s",
        key_added,
        key_added + "_label",
        key_added + "_agreement",
        ", ".join(f"{k} {v:.0%}" for k, v in predicted_share.head(8).items()),
    )
