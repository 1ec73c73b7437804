"""Where label-transfer accuracy is lost, step by step, in either direction on the full Baron files.

    python benchmarks/diagnose_transfer_steps.py --direction human_to_mouse [--genes select|all] [--seed 0] [--coarse]

``human_to_mouse``: human is the context, mouse the target (``mouse_to_human`` the other way). The target's
labels are read only to score each step, never by the method. Balanced accuracy over the types with >= 20
cells in both species, and per-type recall, for:

1. the data-level neighbours (``pp.homolog_neighbors``, 25-cell majority vote);
2. the cells the alignment uses (agreement < 0.2): how many and how often their data-level label is right;
3. a 25-nearest-neighbour vote in the aligned latent space (after 40 + 40 epochs);
4. ``transfer_labels`` with every cell labelled and at the defaults (its novelty rule): data-level
   candidates re-ranked by the likelihood similarity, with the anchor check;
5. the same with the 250 latent candidates and no anchor check (the original scSpecies' scheme);
6. a pooled vote of the 25 most similar latent candidates and the 25 data-level neighbours.

Prints one line per step; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scvi

import speciesvi
from speciesvi.tl._labels import vote
from speciesvi.tl._similarity import latent_neighbors

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._original import SHARED_DATA

LABELS, BATCH = "cell_ontology_class", "donor"
#: ``--coarse``: the Baron types merged into compartments, a second label granularity.
COARSE = {
    **dict.fromkeys(
        ["pancreatic A cell", "type B pancreatic cell", "pancreatic D cell", "pancreatic PP cell"], "endocrine"
    ),
    "pancreatic epsilon cell": "endocrine",
    **dict.fromkeys(["pancreatic ductal cell", "pancreatic acinar cell"], "exocrine"),
    **dict.fromkeys(["endothelial cell", "pancreatic stellate cell", "Schwann cell"], "stromal"),
    **dict.fromkeys(["macrophage", "B cell", "T cell", "leukocyte", "mast cell"], "immune"),
}


def prepare(direction: str, genes: str, coarse: bool = False) -> tuple:
    """Context and target AnnData (translated, optionally gene-selected) and the target's true labels."""
    mouse, human = speciesvi.datasets.baron_pancreas(path=SHARED_DATA)
    if coarse:
        for adata in (mouse, human):
            adata.obs[LABELS] = adata.obs[LABELS].astype(str).map(COARSE).fillna("other").astype("category")
    context, target, names = (
        (human, mouse, ("mouse", "human")) if direction == "human_to_mouse" else (mouse, human, ("human", "mouse"))
    )
    speciesvi.pp.translate_genes(target, speciesvi.pp.homology_table(*names), context=context)
    if genes == "select":
        speciesvi.pp.select_genes(target, context, target_batch_key=BATCH, context_batch_key=BATCH)
    truth = target.obs[LABELS].astype(str).to_numpy()
    target.obs = target.obs[[BATCH]].copy()
    return context, target, truth


def main() -> None:
    """Run every step and print its accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", choices=["human_to_mouse", "mouse_to_human"], default="human_to_mouse")
    parser.add_argument("--genes", choices=["select", "all"], default="select")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--coarse", action="store_true", help="compartments (endocrine, exocrine, ...) as labels")
    args = parser.parse_args()
    context, target, truth = prepare(args.direction, args.genes, args.coarse)
    speciesvi.pp.homolog_neighbors(target, context, labels_key=LABELS)
    context_counts = context.obs[LABELS].astype(str).value_counts()
    target_counts = pd.Series(truth).value_counts()
    shared = sorted(set(context_counts.index[context_counts >= 20]) & set(target_counts.index[target_counts >= 20]))

    def report(step: str, predicted) -> None:
        predicted = np.asarray(predicted, dtype=object).astype(str)
        recall = {t: float(np.mean(predicted[truth == t] == t)) for t in shared}
        per_type = ", ".join(f"{t.replace('pancreatic ', '')} {r:.2f}" for t, r in recall.items())
        print(f"{step:48s} {np.mean(list(recall.values())):.3f}  ({per_type})", flush=True)

    data_level = target.obs["homolog_neighbors_label"].astype(str).to_numpy()
    report("1. data-level neighbours", data_level)
    aligned = target.obs["homolog_neighbors_agreement"].to_numpy() < 0.2
    print(
        f"2. aligned cells: {aligned.sum()}, data-level label right for {np.mean(data_level[aligned] == truth[aligned]):.3f}"
    )
    scvi.settings.seed = args.seed
    speciesvi.ContextVI.setup_anndata(context, batch_key=BATCH, labels_key=LABELS)
    speciesvi.TargetVI.setup_anndata(target, batch_key=BATCH)
    context_model = speciesvi.ContextVI(context)
    context_model.train(max_epochs=args.epochs, enable_progress_bar=False)
    model = speciesvi.TargetVI(target, context_model)
    model.train(max_epochs=args.epochs, enable_progress_bar=False)
    labels = model._context_labels(LABELS)
    latent = model.get_latent_representation()
    report("3. latent kNN (k = 25)", vote(labels[latent_neighbors(latent, model._context_latent(), 25)])[0])
    report("4a. transfer_labels, every cell labelled", model.transfer_labels(unassigned_threshold=None)["label"])
    report("4b. transfer_labels at the defaults", model.transfer_labels()["label"])
    data_candidates = target.obsm["homolog_neighbors"].astype(np.int64)
    latent_scheme = model.transfer_labels(
        candidates="latent", data_level_fallback=None, unassigned_threshold=None, key_added="latent"
    )
    report("5. latent candidates, no anchor check", latent_scheme["label"])
    _, ranked_latent = model.similarity(n_candidates=250)
    pooled = np.concatenate([labels[ranked_latent[:, :25]], labels[data_candidates[:, :25]]], axis=1)
    report("6. pooled vote, 25 similar + 25 data-level", vote(pooled)[0])


if __name__ == "__main__":
    main()
