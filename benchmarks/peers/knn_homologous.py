"""Peer: k-nearest-neighbour label transfer on the homologous genes (main environment).

Context and target cells are normalised to 10,000 counts per cell and log1p-transformed on the shared
homologous genes; every target cell takes the majority label of its ``k = 25`` nearest context cells (cosine
distance, exact search), and the share of votes for that label is its confidence. ``k`` is the number of
voters of speciesvi and the original; nothing is tuned. There is no "Unassigned" rule.

    python benchmarks/peers/knn_homologous.py --context mouse.h5ad --target human.h5ad --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _peer_io import Recorder, parser, versions

K = 25


def log_normalise(counts) -> np.ndarray:
    """Counts scaled to 10,000 per cell, log1p, as a dense float32 array."""
    from scipy import sparse

    counts = sparse.csr_matrix(counts, dtype=np.float32)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scaled = sparse.diags(1e4 / np.maximum(totals, 1)) @ counts
    return np.log1p(scaled.toarray()).astype(np.float32)


def main(argv=None) -> None:
    """Fit on the context, predict the target, write the result files."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import anndata as ad
    from sklearn.neighbors import NearestNeighbors

    context, target = ad.read_h5ad(args.context), ad.read_h5ad(args.target)
    rec = Recorder(args, "knn_homologous")
    rec.result["params"] = {"k": K, "metric": "cosine", "normalisation": "1e4 + log1p", "n_genes": context.n_vars}
    labels = context.obs[args.labels_key].astype(str).to_numpy()
    with rec.timed("fit"):
        index = NearestNeighbors(n_neighbors=K, metric="cosine", algorithm="brute").fit(log_normalise(context.X))
    with rec.timed("predict", "knn"):
        _, neighbours = index.kneighbors(log_normalise(target.X))
        votes = labels[neighbours]
        classes, codes = np.unique(votes, return_inverse=True)
        counts = np.zeros((votes.shape[0], classes.size), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(votes.shape[0]), K), codes.ravel()), 1)
        predicted = classes[counts.argmax(1)]
        confidence = counts.max(1) / K
    rec.add("knn", target.obs_names, predicted, confidence)
    rec.write(versions=versions("scikit-learn", "numpy", "anndata"))


if __name__ == "__main__":
    main()
