"""Planning the similarity kernel: which (candidate, batch) codes to decode together, and how to evaluate them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ._counts import CountsCSR

DenseMethod = Literal["auto", "grid", "exact"]


@dataclass
class Job:
    """One chunk of distinct candidates decoded under one batch, and the (cell, candidate) pairs that use it."""

    batch: int
    codes: torch.Tensor  # candidate rows to decode
    pairs: torch.Tensor  # flat pair ids (cell * k + slot)
    rows: torch.Tensor  # row of each pair in the decoded chunk
    grid: torch.Tensor | None  # log-library grid of the dense part, or None to evaluate it per pair


def group_by_code(pairs: torch.Tensor, codes: torch.Tensor, chunk_size: int) -> list[tuple]:
    """Sort pairs by code and cut the distinct codes into chunks: ``(codes, pairs, rows)`` per chunk.

    Examples
    --------
    >>> [(c.tolist(), p.tolist(), r.tolist()) for c, p, r in group_by_code(torch.arange(3), torch.tensor([5, 2, 5]), 4)]
    [([2, 5], [1, 0, 2], [0, 1, 1])]
    """
    if codes.device.type == "cpu":  # numpy's single-threaded sort does not stall on a busy machine
        order = torch.from_numpy(np.argsort(codes.numpy(), kind="stable"))
    else:
        order = torch.argsort(codes, stable=True)
    pairs, codes = pairs[order], codes[order]
    distinct, per_code = torch.unique_consecutive(codes, return_counts=True)
    ends = torch.cumsum(per_code, 0)
    chunks = []
    for lo in range(0, distinct.shape[0], chunk_size):
        hi = min(lo + chunk_size, distinct.shape[0])
        first = int(ends[lo - 1]) if lo > 0 else 0
        last = int(ends[hi - 1])
        rows = torch.repeat_interleave(torch.arange(hi - lo, device=codes.device), per_code[lo:hi])
        chunks.append((distinct[lo:hi], pairs[first:last], rows))
    return chunks


def plan_jobs(
    candidates: torch.Tensor,
    batch_index: torch.Tensor,
    log_library: torch.Tensor,
    n_grid: int,
    chunk_size: int,
    dense: DenseMethod,
) -> list[Job]:
    """Group pairs by (batch, candidate) and cut the distinct candidates of each batch into chunks."""
    k = candidates.shape[1]
    slots = torch.arange(k, device=candidates.device)
    jobs = []
    for batch in torch.unique(batch_index).tolist():
        cells = (batch_index == batch).nonzero().squeeze(1)
        pairs = (cells.unsqueeze(1) * k + slots).reshape(-1)
        t = log_library[cells]
        low, high = float(t.min()), float(t.max())
        grid = None
        if dense != "exact" and high - low > 1e-6:
            grid = torch.linspace(low, high, n_grid, device=candidates.device)
        for codes, chunk_pairs, rows in group_by_code(pairs, candidates.reshape(-1)[pairs], chunk_size):
            # the grid costs about n_grid dense evaluations per code, the exact path one per pair
            use_grid = grid is not None and (dense == "grid" or chunk_pairs.shape[0] > 1.5 * n_grid * codes.shape[0])
            jobs.append(Job(batch, codes, chunk_pairs, rows, grid if use_grid else None))
    return jobs


def check_pairs(candidates: torch.Tensor, counts: CountsCSR, n_codes: int) -> tuple[int, int]:
    """Shape of ``candidates`` (cells, k), after checking it against the counts and the number of codes."""
    if candidates.dim() != 2:
        raise ValueError(f"candidates must be (n_cells, k), got shape {tuple(candidates.shape)}.")
    n_cells, k = candidates.shape
    if counts.n_cells != n_cells:
        raise ValueError(f"counts has {counts.n_cells} cells, candidates {n_cells}.")
    if candidates.numel() and (candidates.min() < 0 or candidates.max() >= n_codes):
        raise ValueError(f"candidate indices must lie in [0, {n_codes}).")
    return n_cells, k
