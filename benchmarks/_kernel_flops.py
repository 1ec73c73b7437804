"""FLOP/s of the similarity kernel against this machine's dense matmul FLOP/s (``run.py --suite flops``).

    python benchmarks/_kernel_flops.py --out FILE.json [--seed 0]

Loads the seed's cached 40 + 40-epoch models of ``benchmarks/bench_label_transfer.py`` on the full Baron pair,
finds the 250 latent candidates of every human cell and times ``candidate_log_likelihood`` with the dense
part evaluated per pair (``exact``) and on the log-library grid (``grid``). FLOPs are counted from the shapes
(see ``OPS``); the dense float32 matmul rate is the best of several ``torch.matmul`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

#: FLOPs counted per operation: a tabulated softplus/sigmoid (index, cubic polynomial, max, add), the dense
#: NB term per gene (difference, softplus, product, sum) and the sparse term per non-zero count.
OPS = {"softplus": 10, "dense_nb": 13, "dense_zinb": 36, "slope": 4, "sparse_nb": 13, "sparse_zinb": 26, "hermite": 20}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """Best dense float32 matmul rate of torch on this machine."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return {"n": n, "repeats": repeats, "seconds": best, "gflops": 2 * n**3 / best / 1e9}


def decoder_flops(decoder) -> int:
    """Multiply-adds of the decoder's linear layers (x 2) plus the log-softmax, per decoded code."""
    from torch import nn

    flops = sum(2 * m.in_features * m.out_features for m in decoder.modules() if isinstance(m, nn.Linear))
    return int(flops + 4 * decoder.logits.out_features)


def main(argv=None) -> None:
    """Measure and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import numba
    import numpy as np
    import torch
    from bench_label_transfer import train_models, warm_up

    from speciesvi.module._similarity import DEFAULT_N_GRID, candidate_log_likelihood
    from speciesvi.tl._similarity import latent_neighbors

    target, _ = train_models(args.seed, 40, retrain=False)
    warm_up(target)
    load_start = round(os.getloadavg()[0], 2)
    matmul = matmul_gflops()
    n_cells = target.adata.n_obs
    cells = target._target_cells(np.arange(n_cells), None)
    context_z = torch.as_tensor(target._context_latent())
    k = 250
    candidates = torch.as_tensor(latent_neighbors(cells.z, context_z.numpy(), k))
    batches = torch.as_tensor(cells.batches)
    decoder = target.module.decoder
    zinb = getattr(decoder, "gene_likelihood", "nb") == "zinb"
    n_genes = int(decoder.logits.out_features)
    pairs = n_cells * k
    codes = candidates.numpy().astype(np.int64) * (int(batches.max()) + 1) + batches.numpy()[:, None]
    n_unique = int(np.unique(codes).size)
    nnz_per_cell = cells.counts.row_lengths().numpy().astype(np.int64)
    sparse_terms = int(nnz_per_cell.sum()) * k
    dense_op = OPS["dense_zinb" if zinb else "dense_nb"]
    sparse_op = OPS["sparse_zinb" if zinb else "sparse_nb"]
    decode = n_unique * decoder_flops(decoder)
    sparse = sparse_terms * sparse_op
    counted = {
        "exact": decode + pairs * n_genes * dense_op + sparse,
        "grid": decode
        + n_unique * DEFAULT_N_GRID * n_genes * (dense_op + OPS["slope"])
        + pairs * OPS["hermite"]
        + sparse,
    }
    kernel = []
    for mode in ("grid", "exact"):
        inputs = (decoder, context_z, candidates, cells.counts, batches, torch.as_tensor(cells.log_library))
        start = time.perf_counter()
        candidate_log_likelihood(*inputs, dense=mode)
        seconds = time.perf_counter() - start
        kernel.append(
            {
                "mode": mode,
                "pairs": pairs,
                "seconds": seconds,
                "gflop": counted[mode] / 1e9,
                "gflops": counted[mode] / seconds / 1e9,
            }
        )
    naive = pairs * (decoder_flops(decoder) + n_genes * (dense_op + sparse_op))
    result = {
        "n_cells": n_cells,
        "k": k,
        "n_genes": n_genes,
        "likelihood": "ZINB" if zinb else "NB",
        "n_unique": n_unique,
        "n_grid": DEFAULT_N_GRID,
        "nnz_per_cell_mean": float(nnz_per_cell.mean()),
        "decoder_flops_per_code": decoder_flops(decoder),
        "op_counts": {"softplus": OPS["softplus"], "dense": dense_op, "sparse": sparse_op},
        "matmul": matmul,
        "kernel": kernel,
        "naive": {"gflop": naive / 1e9, "description": "decode every pair, dense + sparse terms on every gene"},
        "threads": f"torch {torch.get_num_threads()}, numba {numba.get_num_threads()}",
        "loadavg": [load_start, round(os.getloadavg()[0], 2)],
    }
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
