"""The main job: the whole speciesvi workflow on the embedded Baron pancreas pair.

Run ``python -m speciesvi.demo --output speciesvi_demo_output`` (``make demo`` does this after building
the environment). Everything it writes goes to the output folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import anndata as ad
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scvi

import speciesvi

logger = logging.getLogger("speciesvi.demo")

LABELS_KEY = "cell_ontology_class"
BATCH_KEY = "donor"


def _joint_umap(context: ad.AnnData, target: ad.AnnData, key: str) -> ad.AnnData:
    joint = ad.concat(
        {
            "mouse": ad.AnnData(obsm={key: context.obsm[key]}, obs=context.obs[[LABELS_KEY]]),
            "human": ad.AnnData(obsm={key: target.obsm[key]}, obs=target.obs[[LABELS_KEY]]),
        },
        label="species",
        index_unique="-",
    )
    sc.pp.neighbors(joint, use_rep=key, n_neighbors=15, random_state=0)
    sc.tl.umap(joint, random_state=0)
    return joint


def _transfer_accuracy(mouse: ad.AnnData, human: ad.AnnData, output: Path) -> None:
    """Balanced accuracy of data-level against likelihood-ranked votes, for several top-k."""
    truth = human.obs[LABELS_KEY].astype(str).to_numpy()
    labels = mouse.obs[LABELS_KEY].astype(str).to_numpy()
    ranked = {
        "data-level neighbours": human.obsm["homolog_neighbors"],
        "speciesvi likelihood": human.obsm["speciesvi_similarity_index"],
    }
    accuracy = {
        method: {
            k: speciesvi.tl.evaluate_labels(
                truth, speciesvi.tl.vote(labels[index[:, :k]])[0], reference=labels, min_cells=20
            ).balanced_accuracy
            for k in (1, 5, 10, 25, 50)
        }
        for method, index in ranked.items()
    }
    speciesvi.pl.transfer_accuracy(accuracy, save=output / "transfer_accuracy.png")
    plt.close("all")


def _transfer_labels(target: speciesvi.TargetVI, mouse: ad.AnnData, human: ad.AnnData, output: Path) -> dict:
    """Label transfer with "Unassigned", its CSV, the confusion heatmap and the cell-type similarity heatmap."""
    result = target.transfer_labels(labels_key=LABELS_KEY, store_similarities=True)
    result.to_csv(output / "labels_human.csv")
    _transfer_accuracy(mouse, human, output)
    evaluation = speciesvi.tl.evaluate_labels(
        human.obs[LABELS_KEY], result["label"], reference=mouse.obs[LABELS_KEY], min_cells=20
    )
    speciesvi.pl.confusion_heatmap(
        evaluation.confusion,
        balanced_accuracy=evaluation.balanced_accuracy,
        title="Human cell types (rows) labelled from mouse (columns), % of each row",
        save=output / "confusion_labels.png",
    )
    table = target.cell_type_similarity(scale="min_max")
    table.to_csv(output / "cell_type_similarity.csv")
    speciesvi.pl.similarity_heatmap(
        table,
        lower_is_similar=False,
        title="Cell-type similarity, human (transferred labels) vs mouse\n(per row: 1 = most similar mouse type)",
        xlabel="Mouse cell type",
        ylabel="Human cell type (transferred label)",
        save=output / "cell_type_similarity.png",
    )
    truth = human.obs[LABELS_KEY].astype(str)
    novel = ~truth.isin(set(mouse.obs[LABELS_KEY].astype(str)))
    unassigned = result["label"].astype(str) == speciesvi.tl.UNASSIGNED
    return {
        "balanced_accuracy": round(float(evaluation.balanced_accuracy), 4),
        "unassigned_novel_types": round(float(unassigned[novel].mean()), 4),
        "unassigned_shared_types": round(float(unassigned[~novel].mean()), 4),
    }


#: Latent draws per cell type for the demo's homolog fold changes (the method's default is 50,000).
DEMO_LFC_SAMPLES = 10_000


def _homolog_lfc(target: speciesvi.TargetVI, output: Path, n_samples: int = DEMO_LFC_SAMPLES) -> str:
    """Homolog log2 fold changes (CSV) and one LFC-versus-probability plot per shared cell type; returns a file note."""
    labels_key = None if f"speciesvi_{LABELS_KEY}" in target.adata.obs else LABELS_KEY  # transferred labels first
    table = target.homolog_lfc(labels_key=labels_key, n_samples=n_samples)
    table.to_csv(output / "homolog_lfc.csv", index=False)
    folder = output / "lfc"
    folder.mkdir(exist_ok=True)
    for cell_type in table["cell_type"].cat.categories:
        name = "".join(c if c.isalnum() else "_" for c in cell_type).strip("_")
        speciesvi.pl.lfc_probability(
            table, cell_type, target_name="human", context_name="mouse", save=folder / f"lfc_{name}.png"
        )
        plt.close("all")
    context = target.context_model.adata
    bulk = speciesvi.tl.pseudobulk_lfc(target.adata, context, LABELS_KEY, gene_pairs=table)
    speciesvi.pl.lfc_vs_pseudobulk(table, bulk, save=output / "lfc_vs_pseudobulk.png")
    plt.close("all")
    logger.info("Homolog LFC of %d cell types written to %s", table["cell_type"].nunique(), output / "homolog_lfc.csv")
    return (
        f"homolog_lfc.csv (log2 fold changes of {table['gene_target'].nunique()} homologous gene pairs, human over "
        f"mouse, in {table['cell_type'].nunique()} cell types, {n_samples} draws each) lfc/lfc_<cell type>.png and lfc_vs_pseudobulk.png."
    )


def run(output: Path, epochs: int = 40, seed: int = 0) -> dict:
    """Run the workflow and write its results to ``output``; returns the headline figures."""
    output.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = seed
    timings: dict[str, float] = {}
    mouse, human = speciesvi.datasets.baron_pancreas()

    start = time.perf_counter()
    table = speciesvi.pp.homology_table("human", "mouse")
    speciesvi.pp.translate_genes(human, table, context=mouse)
    speciesvi.pp.select_genes(human, mouse, target_batch_key=BATCH_KEY, context_batch_key=BATCH_KEY)
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key=LABELS_KEY)
    timings["homology_and_neighbors_s"] = time.perf_counter() - start

    logger.info("Training the context model (mouse, %d epochs)", epochs)
    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH_KEY, labels_key=LABELS_KEY)
    context = speciesvi.ContextVI(mouse)
    start = time.perf_counter()
    context.train(max_epochs=epochs)
    timings["context_training_s"] = time.perf_counter() - start
    mouse.obsm["X_speciesvi"] = context.get_latent_representation()

    logger.info("Training the target model (human, %d epochs)", epochs)
    speciesvi.TargetVI.setup_anndata(human, batch_key=BATCH_KEY)
    target = speciesvi.TargetVI(human, context)
    start = time.perf_counter()
    target.train(max_epochs=epochs)
    timings["target_training_s"] = time.perf_counter() - start
    human.obsm["X_speciesvi"] = target.get_latent_representation()

    start = time.perf_counter()
    figures = _transfer_labels(target, mouse, human, output)
    timings["label_transfer_and_similarity_s"] = time.perf_counter() - start

    start = time.perf_counter()
    lfc_note = _homolog_lfc(target, output)
    timings["homolog_lfc_s"] = time.perf_counter() - start

    pd.DataFrame(mouse.obsm["X_speciesvi"], index=mouse.obs_names).to_csv(output / "latent_mouse.csv")
    pd.DataFrame(human.obsm["X_speciesvi"], index=human.obs_names).to_csv(output / "latent_human.csv")
    context_umap = _joint_umap(mouse, mouse[:0], "X_speciesvi")
    speciesvi.pl.joint_embedding(
        context_umap.obsm["X_umap"],
        context_umap.obs["species"],
        context_umap.obs[LABELS_KEY],
        context_name="mouse",
        target_name="human",
        title="ContextVI latent space of the mouse cells (UMAP)",
        save=output / "umap_context.png",
    )
    joint = _joint_umap(mouse, human, "X_speciesvi")
    speciesvi.pl.joint_embedding(
        joint.obsm["X_umap"],
        joint.obs["species"],
        joint.obs[LABELS_KEY],
        context_name="mouse",
        target_name="human",
        title="Mouse and human cells in the aligned latent space (UMAP)",
        save=output / "umap_joint.png",
    )
    umap_mouse, umap_human = joint.obsm["X_umap"][: mouse.n_obs], joint.obsm["X_umap"][mouse.n_obs :]
    truth = human.obs[LABELS_KEY].astype(str).to_numpy()
    for cell_type in ("type B pancreatic cell", "pancreatic acinar cell"):
        index = int(np.flatnonzero(truth == cell_type)[0])
        ranking = target.transfer_labels_cell(index).sort_values("context_index")
        name = "".join(c if c.isalnum() else "_" for c in cell_type).strip("_")
        speciesvi.pl.cell_similarity(
            umap_mouse,
            ranking["similarity"].to_numpy(),
            target_coordinates=umap_human[index],
            title=f"Mouse cells by similarity to one human {cell_type}",
            save=output / f"similarity_{name}.png",
        )
    speciesvi.pl.training_history(context, title="ContextVI (mouse) training", save=output / "history_context.png")
    speciesvi.pl.training_history(target, title="TargetVI (human) training", save=output / "history_target.png")
    plt.close("all")
    context.save(output / "models" / "context", overwrite=True)
    target.save(output / "models" / "target", overwrite=True)
    genes = human.uns["select_genes_params"]
    summary = {
        "epochs": epochs,
        "seed": seed,
        "genes_human": genes["n_target_genes"],
        "genes_mouse": genes["n_context_genes"],
        "homologous_gene_pairs": genes["n_homologous_pairs"],
        **figures,
        **{k: round(v, 2) for k, v in timings.items()},
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["# speciesvi demo: Baron pancreas, mouse (context) -> human (target)", ""]
    lines += [f"- {key}: {value}" for key, value in summary.items()]
    lines += [
        "",
        "Files: latent_mouse.csv, latent_human.csv, labels_human.csv (transferred labels and confidence),",
        "confusion_labels.png, transfer_accuracy.png (data-level vs likelihood votes by top-k),",
        "cell_type_similarity.csv/.png, umap_context.png, umap_joint.png, similarity_<cell type>.png (mouse",
        "cells by similarity to one human cell), history_context.png, history_target.png, models/.",
        "Balanced accuracy is over the human cell types with >= 20 cells that the mouse data also holds;",
        "unassigned_novel_types is the share of human cells of types absent from the mouse data (acinar cells)",
        'left "Unassigned".',
    ]
    lines.append(f"Homolog fold changes: {lfc_note}")
    (output / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("speciesvi_demo_output"), help="output folder")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs of each model")
    parser.add_argument("--seed", type=int, default=0, help="random seed (scvi.settings.seed)")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = run(args.output, epochs=args.epochs, seed=args.seed)
    logger.info("Done: %s written to %s", ", ".join(f"{k}={v}" for k, v in summary.items()), args.output)


if __name__ == "__main__":
    main()
