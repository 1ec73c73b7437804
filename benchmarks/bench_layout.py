"""Before/after check of a code-layout change on the embedded demo pair (mouse context -> human target).

    python benchmarks/bench_layout.py --output benchmarks/.work/layout/<name> [--epochs 40] [--seed 0]
    python benchmarks/bench_layout.py --compare benchmarks/.work/layout/before benchmarks/.work/layout/after

The run trains ContextVI and TargetVI as ``make demo`` does (``select_genes``, library defaults, ``seed``), then
times ``transfer_labels`` (every cell labelled and at the defaults), ``cell_type_similarity`` and
``homolog_lfc`` (10,000 draws, known labels), and writes to ``--output``:

* ``figures.json``: balanced accuracy over the shared types with >= 20 cells, the median Spearman correlation of
  the homolog LFC with the pseudo-bulk LFC, and the wall times of each step;
* ``labels.csv``, ``similarity.npy``, ``lfc.csv``, ``cell_type_similarity.csv``: the outputs themselves.

``--compare`` prints both runs' figures side by side and the largest difference of each output, so a
refactor that must not move the numbers can be checked exactly (the same seed on the same machine trains the
same weights). ``--compare`` writes ``benchmarks/results/layout.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scvi

import speciesvi

LABELS_KEY = "cell_ontology_class"
BATCH_KEY = "donor"
RESULTS = Path(__file__).resolve().parent / "results"


def run(output: Path, epochs: int, seed: int) -> dict:
    """Train, transfer, compare and write the outputs; returns the figures."""
    output.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = seed
    mouse, human = speciesvi.datasets.baron_pancreas()
    table = speciesvi.pp.homology_table("human", "mouse")
    speciesvi.pp.translate_genes(human, table, context=mouse)
    speciesvi.pp.select_genes(human, mouse, target_batch_key=BATCH_KEY, context_batch_key=BATCH_KEY)
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key=LABELS_KEY)
    times: dict[str, float] = {}

    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH_KEY, labels_key=LABELS_KEY)
    context = speciesvi.ContextVI(mouse)
    start = time.perf_counter()
    context.train(max_epochs=epochs)
    times["context_training_s"] = time.perf_counter() - start

    speciesvi.TargetVI.setup_anndata(human, batch_key=BATCH_KEY)
    target = speciesvi.TargetVI(human, context)
    start = time.perf_counter()
    target.train(max_epochs=epochs)
    times["target_training_s"] = time.perf_counter() - start

    start = time.perf_counter()
    every = target.transfer_labels(labels_key=LABELS_KEY, unassigned_threshold=None, key_added="every_cell")
    times["transfer_labels_s"] = time.perf_counter() - start
    defaults = target.transfer_labels(labels_key=LABELS_KEY, store_similarities=True)
    start = time.perf_counter()
    types = target.cell_type_similarity(scale="min_max")
    times["cell_type_similarity_s"] = time.perf_counter() - start
    start = time.perf_counter()
    lfc = target.homolog_lfc(labels_key=LABELS_KEY, context_labels_key=LABELS_KEY, n_samples=10_000)
    times["homolog_lfc_s"] = time.perf_counter() - start

    truth = human.obs[LABELS_KEY]
    reference = mouse.obs[LABELS_KEY]
    bulk = speciesvi.tl.pseudobulk_lfc(human, mouse, LABELS_KEY, gene_pairs=lfc)
    agreement = speciesvi.tl.lfc_agreement(lfc, bulk)
    unassigned = defaults["label"].astype(str) == speciesvi.tl.UNASSIGNED
    novel = ~truth.astype(str).isin(set(reference.astype(str)))
    figures = {
        "epochs": epochs,
        "seed": seed,
        "balanced_accuracy_every_cell": round(
            float(
                speciesvi.tl.evaluate_labels(truth, every["label"], reference=reference, min_cells=20).balanced_accuracy
            ),
            4,
        ),
        "balanced_accuracy_defaults": round(
            float(
                speciesvi.tl.evaluate_labels(
                    truth, defaults["label"], reference=reference, min_cells=20
                ).balanced_accuracy
            ),
            4,
        ),
        "unassigned_novel": round(float(unassigned[novel].mean()), 4),
        "unassigned_shared": round(float(unassigned[~novel].mean()), 4),
        "lfc_spearman_median": round(float(agreement["spearman"].median()), 4),
        **{key: round(value, 2) for key, value in times.items()},
    }
    pd.concat({"every_cell": every, "defaults": defaults}, axis=1).to_csv(output / "labels.csv")
    np.save(output / "similarity.npy", np.asarray(human.obsm["speciesvi_similarity"]))
    lfc.to_csv(output / "lfc.csv", index=False)
    types.to_csv(output / "cell_type_similarity.csv")
    (output / "figures.json").write_text(json.dumps(figures, indent=2))
    return figures


def _max_difference(before: pd.DataFrame, after: pd.DataFrame) -> float:
    numeric = before.select_dtypes("number").columns
    if not len(numeric):
        return 0.0
    return float(np.nanmax(np.abs(before[numeric].to_numpy(float) - after[numeric].to_numpy(float))))


def compare(before: Path, after: Path) -> dict:
    """Figures side by side and the largest difference of each output."""
    figures = {
        name: json.loads((path / "figures.json").read_text()) for name, path in (("before", before), ("after", after))
    }
    labels = {
        name: pd.read_csv(path / "labels.csv", header=[0, 1], index_col=0)
        for name, path in (("b", before), ("a", after))
    }
    label_columns = [c for c in labels["b"].columns if c[1] == "label"]
    differences = {
        "labels_changed": int(
            (labels["b"][label_columns].astype(str) != labels["a"][label_columns].astype(str)).sum().sum()
        ),
        "label_scores_max_abs_diff": _max_difference(labels["b"], labels["a"]),
        "similarity_max_abs_diff": float(
            np.nanmax(np.abs(np.load(before / "similarity.npy") - np.load(after / "similarity.npy")))
        ),
        "lfc_max_abs_diff": _max_difference(pd.read_csv(before / "lfc.csv"), pd.read_csv(after / "lfc.csv")),
        "cell_type_similarity_max_abs_diff": _max_difference(
            pd.read_csv(before / "cell_type_similarity.csv", index_col=0),
            pd.read_csv(after / "cell_type_similarity.csv", index_col=0),
        ),
    }
    result = {"figures": figures, "differences": differences}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "layout.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Layout change, before and after (demo pair, mouse -> human)",
        "",
        "| figure | before | after |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {key} | {figures['before'][key]} | {figures['after'].get(key)} |" for key in figures["before"]]
    lines += ["", "| output | largest difference |", "| --- | --- |"]
    lines += [f"| {key} | {value:.3g} |" for key, value in differences.items()]
    (RESULTS / "layout.md").write_text("\n".join(lines) + "\n")
    return result


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.compare:
        print(json.dumps(compare(*args.compare), indent=2))
    else:
        print(json.dumps(run(args.output, args.epochs, args.seed), indent=2))


if __name__ == "__main__":
    main()
