"""Peer: CellTypist trained on the context (mouse) data, run in its own environment.

Runs with ``benchmarks/.envs/celltypist/bin/python`` (celltypist 1.7.1 with scikit-learn < 1.8, built by
``benchmarks/peers/setup_celltypist_env.sh``). Both species are normalised to 10,000 counts per cell and
log1p-transformed on the homologous genes (human genes carry their mouse symbols). ``celltypist.train`` fits
its default logistic-regression model on the mouse cells; ``celltypist.annotate`` then labels the human cells
three ways, all with CellTypist's defaults:

* ``best match``: the most probable label, confidence = its probability;
* ``majority voting``: the same, then the majority label of each over-cluster (Leiden clusters CellTypist
  computes on the query), confidence = the probability of the voted label;
* ``prob match``: every label with probability > 0.5 (several are joined with ``|`` and count as wrong),
  "Unassigned" when none passes, which is CellTypist's novelty rule.

A second model follows CellTypist's documented best practice for building a model: ``celltypist.train(...,
feature_selection=True, top_genes=300)`` (a first fit ranks the genes; the model is refitted on the union of
the 300 genes with the largest coefficients per cell type), then ``fs_best_match`` and ``fs_majority_voting``
(``majority_voting=True``), as above. Its training time is in ``fit_s_by_model``; ``fit_s`` stays the default
model's.

    benchmarks/.envs/celltypist/bin/python benchmarks/peers/celltypist_peer.py --context mouse.h5ad \
        --target human.h5ad --out DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _peer_io import Recorder, parser, versions

TOP_GENES = 300


def annotate(rec: Recorder, target, model, prefix: str) -> None:
    """Best match and majority voting of one model (variants ``<prefix>best_match``, ``<prefix>majority_voting``)."""
    import celltypist

    with rec.timed("predict", f"{prefix}best_match"):
        best = celltypist.annotate(target, model=model, mode="best match")
    probabilities = best.probability_matrix.loc[target.obs_names]
    labels = best.predicted_labels.loc[target.obs_names, "predicted_labels"].astype(str).to_numpy()
    rec.add(f"{prefix}best_match", target.obs_names, labels, probabilities.max(axis=1).to_numpy())
    with rec.timed("predict", f"{prefix}majority_voting"):
        voted = celltypist.annotate(target, model=model, mode="best match", majority_voting=True)
    voted_labels = voted.predicted_labels.loc[target.obs_names, "majority_voting"].astype(str).to_numpy()
    columns = {name: i for i, name in enumerate(probabilities.columns)}
    matrix = probabilities.to_numpy()
    voted_confidence = np.array(
        [matrix[i, columns[label]] if label in columns else np.nan for i, label in enumerate(voted_labels)]
    )
    rec.add(f"{prefix}majority_voting", target.obs_names, voted_labels, voted_confidence)


def main(argv=None) -> None:
    """Fit on the context, predict the target, write the result files."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import anndata as ad
    import celltypist
    import scanpy as sc

    np.random.seed(args.seed)
    context, target = ad.read_h5ad(args.context), ad.read_h5ad(args.target)
    rec = Recorder(args, "celltypist")
    rec.result["params"] = {"model": "logistic regression (celltypist.train defaults)", "p_thres": 0.5}
    with rec.timed("fit"):
        sc.pp.normalize_total(context, target_sum=1e4)
        sc.pp.log1p(context)
        model = celltypist.train(context, labels=args.labels_key, check_expression=True)
    sc.pp.normalize_total(target, target_sum=1e4)
    sc.pp.log1p(target)
    annotate(rec, target, model, "")
    with rec.timed("predict", "prob_match"):
        prob = celltypist.annotate(target, model=model, mode="prob match", p_thres=0.5)
    probabilities = prob.probability_matrix.loc[target.obs_names]
    prob_labels = prob.predicted_labels.loc[target.obs_names, "predicted_labels"].astype(str).to_numpy()
    rec.add("prob_match", target.obs_names, prob_labels, probabilities.max(axis=1).to_numpy())
    start = time.perf_counter()
    selected = celltypist.train(
        context, labels=args.labels_key, check_expression=True, feature_selection=True, top_genes=TOP_GENES
    )
    rec.result["fit_s_by_model"] = {"default": rec.result["fit_s"], "fs": round(time.perf_counter() - start, 3)}
    rec.result["params"]["fs_model"] = {"feature_selection": True, "top_genes": TOP_GENES}
    rec.result["params"]["fs_n_genes"] = int(len(selected.features))
    annotate(rec, target, selected, "fs_")
    rec.write(versions=versions("celltypist", "scikit-learn", "scanpy", "anndata"))


if __name__ == "__main__":
    main()
