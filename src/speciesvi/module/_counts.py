"""Counts in compressed sparse row form, and walking over the stored counts of many (cell, candidate) pairs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse


@dataclass
class CountsCSR:
    """Counts of cells in compressed sparse row form, as torch tensors.

    Parameters
    ----------
    indptr
        Row pointers, ``(n_cells + 1,)`` int64.
    indices
        Gene index of every stored count, int64.
    data
        The counts, float32.
    n_genes
        Number of genes (columns).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> counts = CountsCSR.from_scipy(sparse.csr_matrix(np.array([[0, 2], [1, 0]])))
    >>> counts.row_lengths().tolist()
    [1, 1]
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    data: torch.Tensor
    n_genes: int

    @classmethod
    def from_scipy(cls, matrix: sparse.spmatrix | sparse.sparray | np.ndarray) -> CountsCSR:
        """Wrap a SciPy sparse matrix (or a dense array) without densifying it; explicit zeros are dropped."""
        csr = sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
        csr.eliminate_zeros()
        csr.sort_indices()
        return cls(
            indptr=torch.from_numpy(csr.indptr.astype(np.int64)),
            indices=torch.from_numpy(csr.indices.astype(np.int64)),
            data=torch.from_numpy(csr.data),
            n_genes=int(csr.shape[1]),
        )

    @property
    def n_cells(self) -> int:
        """Number of cells (rows)."""
        return int(self.indptr.shape[0] - 1)

    def row_lengths(self) -> torch.Tensor:
        """Number of non-zero counts of every cell."""
        return self.indptr[1:] - self.indptr[:-1]

    def row_sums(self) -> torch.Tensor:
        """Total count of every cell."""
        rows = torch.repeat_interleave(torch.arange(self.n_cells, device=self.data.device), self.row_lengths())
        return torch.zeros(self.n_cells, dtype=self.data.dtype, device=self.data.device).index_add_(0, rows, self.data)

    def to(self, device: torch.device | str) -> CountsCSR:
        """Move the tensors to ``device``."""
        return CountsCSR(self.indptr.to(device), self.indices.to(device), self.data.to(device), self.n_genes)


def ragged_positions(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For pairs with ``lengths`` stored counts starting at ``starts``: the pair of every element and its position.

    Examples
    --------
    >>> pair_of, position = ragged_positions(torch.tensor([4, 0]), torch.tensor([2, 1]))
    >>> pair_of.tolist(), position.tolist()
    ([0, 0, 1], [4, 5, 0])
    """
    total = int(lengths.sum())
    pair_of = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    position = starts[pair_of] + torch.arange(total, device=lengths.device) - offsets[pair_of]
    return pair_of, position


def pair_batches(lengths: torch.Tensor, max_elements: int) -> list[tuple[int, int]]:
    """Cut consecutive pairs into ranges whose stored counts fit into ``max_elements`` (at least one pair).

    Examples
    --------
    >>> pair_batches(torch.tensor([3, 3, 5, 1]), 6)
    [(0, 2), (2, 3), (3, 4)]
    """
    ends = torch.cumsum(lengths, 0)
    ranges, lo, n = [], 0, lengths.shape[0]
    while lo < n:
        base = int(ends[lo - 1]) if lo > 0 else 0
        hi = int(torch.searchsorted(ends, torch.tensor(base + max_elements, device=ends.device), right=True))
        hi = min(max(hi, lo + 1), n)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def pair_counts(
    counts: CountsCSR, cells: torch.Tensor, max_elements: int
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The stored counts of the pairs whose cells are ``cells``, in ranges of at most ``max_elements`` counts.

    Yields ``(lo, hi, pair_of, genes, values)`` per range of pairs ``lo:hi``: the pair (relative to ``lo``),
    gene and value of every stored count of those pairs.

    Examples
    --------
    >>> counts = CountsCSR.from_scipy(np.array([[0.0, 2, 1], [3, 0, 0]]))
    >>> [
    ...     (lo, hi, pair_of.tolist(), genes.tolist())
    ...     for lo, hi, pair_of, genes, _ in pair_counts(counts, torch.tensor([1, 0]), 8)
    ... ]
    [(0, 2, [0, 1, 1], [0, 1, 2])]
    """
    lengths = counts.row_lengths()[cells]
    starts = counts.indptr[cells]
    for lo, hi in pair_batches(lengths, max_elements):
        pair_of, position = ragged_positions(starts[lo:hi], lengths[lo:hi])
        yield lo, hi, pair_of, counts.indices[position], counts.data[position]
