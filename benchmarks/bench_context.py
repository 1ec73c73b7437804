"""Context training on the full Baron mouse data: speciesvi's ContextVI beside the original scSpecies.

    python benchmarks/bench_context.py [--epochs 40] [--seed 0] [--skip-original]

Both train 40 epochs on the same 4,000 most variable genes of the 1,886 mouse cells (donor batches);
speciesvi's latent is scored by a 15-nearest-neighbour classifier on held-out mouse cells (5-fold),
balanced accuracy over the types with >= 20 cells. Writes benchmarks/results/context.{json,md} and
docs/benchmarks/context.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scvi
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

import speciesvi

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from benchmarks._original import DEFAULT_CONTEXT, run_original  # noqa: E402
from benchmarks._step_floor import training_floor  # noqa: E402


def held_out_knn_accuracy(latent: np.ndarray, labels: np.ndarray, min_cells: int = 20) -> float:
    predicted = cross_val_predict(KNeighborsClassifier(n_neighbors=15), latent, labels, cv=5)
    types, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, types[counts >= min_cells])
    return float(balanced_accuracy_score(labels[keep], predicted[keep]))


def run_speciesvi(epochs: int, seed: int) -> dict:
    scvi.settings.seed = seed
    mouse = ad.read_h5ad(DEFAULT_CONTEXT)
    hvg = sc.pp.highly_variable_genes(mouse, flavor="seurat_v3", n_top_genes=4000, batch_key="donor", inplace=False)
    mouse = mouse[:, hvg["highly_variable"].to_numpy()].copy()
    speciesvi.ContextVI.setup_anndata(mouse, batch_key="donor", labels_key="cell_ontology_class")
    model = speciesvi.ContextVI(mouse)
    start = time.perf_counter()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    seconds = time.perf_counter() - start
    labels = mouse.obs["cell_ontology_class"].astype(str).to_numpy()
    return {
        "train_s": round(seconds, 2),
        "held_out_knn_balanced_accuracy": round(held_out_knn_accuracy(model.get_latent_representation(), labels), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "n_genes": int(mouse.n_vars),
        "floor": training_floor(model.module, mouse.n_obs, epochs),
    }


def floor_lines(floor: dict, original_s: float | None) -> list[str]:
    """Markdown: the lower bound of ``benchmarks/_step_floor.py`` on this training run, beside a 5x target."""
    lines = [
        "",
        f"Lower bound on this machine (`benchmarks/_step_floor.py`): {floor['steps']} steps, each at least the model's "
        f"matrix products ({floor['matmul_float32_ms']} ms in float32, {floor['matmul_bfloat16_ms']} ms in "
        f"bfloat16), a fused Adam update ({floor['adam_ms']} ms) and one pass of the likelihood's transcendental "
        f"functions ({floor['likelihood_ms']} ms): **{floor['floor_float32_s']} s** in float32, "
        f"{floor['floor_bfloat16_s']} s with every product in bfloat16.",
    ]
    if original_s:
        lines[-1] += f" A 5x speed-up over the original means {original_s / 5:.2f} s."
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-original", action="store_true")
    args = parser.parse_args()
    results = {"epochs": args.epochs, "seed": args.seed, "loadavg_start": list(os.getloadavg())}
    results["speciesvi"] = run_speciesvi(args.epochs, args.seed)
    if not args.skip_original:
        original = run_original(
            BENCH / ".work" / "context_original", seed=369963, stages="context", epochs_context=args.epochs
        )
        results["original"] = {"train_s": original["timings"]["stages_s"]["context_training"]}
        results["speedup"] = round(results["original"]["train_s"] / results["speciesvi"]["train_s"], 2)
    results["loadavg_end"] = list(os.getloadavg())
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "context.json").write_text(json.dumps(results, indent=2))
    ours = results["speciesvi"]
    lines = [
        "# Context training (Baron mouse, 1,886 cells, 4,000 genes)",
        "",
        f"`python benchmarks/bench_context.py --epochs {args.epochs}`; 2-core CPU; load average at start "
        f"{results['loadavg_start'][0]:.2f}, at end {results['loadavg_end'][0]:.2f}.",
        "",
        "| implementation | epochs | wall time (s) | held-out kNN balanced accuracy | peak RSS (MB) |",
        "| --- | --- | --- | --- | --- |",
        f"| speciesvi ContextVI | {args.epochs} | {ours['train_s']} | {ours['held_out_knn_balanced_accuracy']} "
        f"| {ours['peak_rss_mb']} |",
    ]
    if "original" in results:
        lines.append(f"| scSpecies 0.1.4 `train_context` | {args.epochs} | {results['original']['train_s']} | | |")
        lines += ["", f"Speed-up: {results['speedup']}x."]
    lines += floor_lines(ours["floor"], results.get("original", {}).get("train_s"))
    text = "\n".join(lines) + "\n"
    (BENCH / "results" / "context.md").write_text(text)
    (BENCH.parent / "docs" / "benchmarks" / "context.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
