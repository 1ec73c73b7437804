"""``transfer_labels`` at 100,000 target x 100,000 context cells: wall time and peak memory.

    python benchmarks/bench_label_transfer_scale.py [--cells 100000] [--seed 0]

The trained 40 + 40-epoch models of benchmarks/bench_label_transfer.py (seed 0; trained there when missing)
are applied to the full Baron cells tiled to ``--cells`` cells per species with noise: every copy of a cell
is a binomial thinning of its counts (each count kept with probability 0.9), so no two cells are identical and
the matrices stay sparse. The data-level neighbours (``speciesvi.pp.homolog_neighbors``) are computed on the
tiled data, then ``TargetVI.transfer_labels`` runs in a fresh process, whose wall time and peak resident
memory (``VmHWM``, including the loaded data and models) are the figures.

Writes benchmarks/results/label_transfer_scale.{json,md} and docs/benchmarks/label_transfer_scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
from scipy import sparse

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "label_transfer_scale"
KEEP = 0.9


def tile(adata: ad.AnnData, n_cells: int, rng: np.random.Generator) -> ad.AnnData:
    """``n_cells`` noisy copies of ``adata``'s cells (binomial thinning of the counts), sparse throughout."""
    rows = rng.choice(adata.n_obs, size=n_cells, replace=n_cells > adata.n_obs)
    counts = sparse.csr_matrix(adata.X)[rows]
    counts.data = rng.binomial(counts.data.astype(np.int64), KEEP).astype(np.float32)
    counts.eliminate_zeros()
    tiled = ad.AnnData(counts, obs=adata.obs.iloc[rows].reset_index(drop=True), var=adata.var.copy())
    tiled.obs_names = [f"{adata.obs_names[r]}-{i}" for i, r in enumerate(rows)]
    empty = np.asarray(counts.sum(axis=1)).ravel() == 0
    return tiled[~empty].copy()


def prepare(n_cells: int, seed: int) -> dict:
    sys.path.insert(0, str(BENCH))
    from bench_label_transfer import LABELS, load_pair, train_models

    import speciesvi

    train_models(seed, 40, retrain=False)  # make sure the models exist
    mouse, human = load_pair()  # translate_genes, then select_genes, on the original cells (the models' genes)
    rng = np.random.default_rng(seed)
    mouse, human = tile(mouse, n_cells, rng), tile(human, n_cells, rng)  # keeps human.var["context_gene"]
    start = time.perf_counter()
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key=LABELS)
    neighbors_s = time.perf_counter() - start
    WORK.mkdir(parents=True, exist_ok=True)
    mouse.write_h5ad(WORK / "mouse.h5ad")
    human.write_h5ad(WORK / "human.h5ad")
    return {
        "n_context": int(mouse.n_obs),
        "n_target": int(human.n_obs),
        "homolog_neighbors_s": round(neighbors_s, 1),
        "prepare_peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (VmHWM; unlike ru_maxrss it is not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def transfer(seed: int) -> dict:
    """Runs in its own process: load the tiled data and the models, time transfer_labels."""
    sys.path.insert(0, str(BENCH))
    import scvi
    from bench_label_transfer import BATCH, LABELS
    from bench_label_transfer import WORK as MODELS

    import speciesvi

    folder = MODELS / f"seed{seed}_e40"
    mouse, human = ad.read_h5ad(WORK / "mouse.h5ad"), ad.read_h5ad(WORK / "human.h5ad")
    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH, labels_key=LABELS)
    speciesvi.TargetVI.setup_anndata(human, batch_key=BATCH)
    scvi.settings.verbosity = 30
    context = speciesvi.ContextVI.load(str(folder / "context"), adata=mouse)
    target = speciesvi.TargetVI.load(folder, adata=human, context_model=context)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = target.transfer_labels(progress_bar=True)
    seconds = time.perf_counter() - start
    truth = human.obs[LABELS].astype(str).to_numpy()
    evaluation = speciesvi.tl.evaluate_labels(truth, result["label"], reference=mouse.obs[LABELS], min_cells=20)
    return {
        "transfer_labels_s": round(seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
        "loadavg": [round(load, 2), round(os.getloadavg()[0], 2)],
        "balanced_accuracy": round(float(evaluation.balanced_accuracy), 4),
        "threads": int(__import__("torch").get_num_threads()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transfer-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.transfer_only:
        sys.stdout.write(json.dumps(transfer(args.seed)) + "\n")
        return
    results = {"cells": args.cells, "seed": args.seed, **prepare(args.cells, args.seed)}
    proc = subprocess.run(
        [sys.executable, __file__, "--transfer-only", "--seed", str(args.seed)],
        capture_output=True,
        text=True,
        check=True,
    )
    results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "label_transfer_scale.json").write_text(json.dumps(results, indent=2))
    text = "\n".join(
        [
            f"# Label transfer at {results['n_target']:,} x {results['n_context']:,} cells",
            "",
            f"`python benchmarks/bench_label_transfer_scale.py --cells {args.cells}` on a shared 2-core CPU "
            f"(torch threads: {results['threads']}; load average {results['loadavg'][0]} at the start, "
            f"{results['loadavg'][1]} at the end). Full Baron cells tiled with binomial thinning (p = {KEEP}); "
            "models of benchmarks/bench_label_transfer.py (seed 0).",
            "",
            "| step | wall time (s) | peak RSS (MB) |",
            "| --- | --- | --- |",
            f"| `pp.homolog_neighbors` (target x context) | {results['homolog_neighbors_s']} "
            f"| {results['prepare_peak_rss_mb']} (incl. tiling) |",
            f"| `TargetVI.transfer_labels` (fresh process, incl. loading) | {results['transfer_labels_s']} "
            f"| {results['peak_rss_mb']} |",
            "",
            f"Balanced accuracy on the tiled cells: {results['balanced_accuracy']}.",
        ]
    )
    (BENCH / "results" / "label_transfer_scale.md").write_text(text + "\n")
    (BENCH.parent / "docs" / "benchmarks" / "label_transfer_scale.md").write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
