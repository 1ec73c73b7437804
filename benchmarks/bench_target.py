"""Aligned target model on the full Baron pair (mouse -> human): latent kNN accuracy, eta = 0 ablation, speed.

    python benchmarks/bench_target.py [--seeds 0 1 2] [--epochs 40] [--skip-original] [--speed-only]

Models: the 40 + 40-epoch ContextVI/TargetVI pairs of benchmarks/bench_label_transfer.py (cached in
benchmarks/.work/label_transfer/, trained there when missing), with the same data (all cells, donor batches,
the demo pair's gene selection). For every seed the latent is scored by a k = 25 nearest-neighbour classifier
fitted on the mouse latent and mouse labels and applied to the human latent: balanced accuracy over the 7 types
with >= 20 cells in both species, and per-type recall.

Ablation: the same context models, a TargetVI trained with eta = 0 (no alignment term) for every seed.

Speed: one fresh 40-epoch TargetVI training (seed 0, the cached context) timed beside the original
scSpecies 0.1.4 ``train_target`` on the same data and epochs in the same run (benchmarks/_original.py; the
original trains its own context first, which is not counted). Wall time and process CPU time are reported
with the load average, since the machine is shared. The original runs on its own 4,000 most variable genes
per species, fewer than the demo selection, so speciesvi is also timed on 4,000 most variable genes per
species (seurat_v3, donor batches; its context trained first, not counted). On that data the same run also
times two references for what this machine allows: the TargetVI without its alignment term (eta = 0), and
scvi-tools' own ``SCVI`` (one encoder, no alignment; at its default width and at ours) with the same epochs
and minibatch size. ``--speed-only`` re-runs only the timings and keeps the accuracy figures of
benchmarks/results/target.json.

Writes benchmarks/results/target.{json,md} and docs/benchmarks/target.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scvi
from sklearn.neighbors import KNeighborsClassifier

import speciesvi
from speciesvi.module import AGREEMENT_KEY

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))
from bench_label_transfer import BATCH, LABELS, load_pair, train_models  # noqa: E402

from benchmarks._original import SHARED_DATA, run_original  # noqa: E402
from benchmarks._step_floor import training_floor  # noqa: E402

K = 25
MIN_CELLS = 20
#: TargetVI.train's default minibatch size, which the lower bound assumes.
BATCH_SIZE = 128
#: Widths of the scvi-tools ``SCVI`` references: its default, and that of our outer encoder.
SCVI_WIDTHS = (128, 300)


def latent_knn(target: speciesvi.TargetVI) -> dict:
    """Balanced accuracy and per-type recall of a k = 25 latent kNN (context cells and labels -> target cells)."""
    human, mouse = target.adata, target.context_model.adata
    knn = KNeighborsClassifier(n_neighbors=K).fit(
        target.context_model.get_latent_representation(), mouse.obs[LABELS].astype(str).to_numpy()
    )
    predicted = knn.predict(target.get_latent_representation())
    evaluation = speciesvi.tl.evaluate_labels(
        human.obs[LABELS].astype(str).to_numpy(), predicted, reference=mouse.obs[LABELS], min_cells=MIN_CELLS
    )
    return {
        "balanced_accuracy": round(float(evaluation.balanced_accuracy), 4),
        "recall": evaluation.recall.round(4).to_dict(),
    }


@contextlib.contextmanager
def timed() -> Iterator[dict]:
    """Wall time, process CPU time and load average (start, end) of the block, filled in when it ends."""
    timing: dict = {}
    start, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    yield timing
    timing["wall_s"] = round(time.perf_counter() - start, 1)
    timing["cpu_s"] = round(time.process_time() - cpu, 1)
    timing["loadavg"] = [round(load, 2), round(os.getloadavg()[0], 2)]


def train_target(context: speciesvi.ContextVI, human, seed: int, epochs: int, plan_kwargs: dict | None) -> tuple:
    scvi.settings.seed = seed
    with timed() as timing:
        model = speciesvi.TargetVI(human, context)
        model.train(max_epochs=epochs, enable_progress_bar=False, plan_kwargs=plan_kwargs)
    return model, timing


def floor_for(model: speciesvi.TargetVI, epochs: int) -> dict:
    """The lower bound of benchmarks/_step_floor.py on this model's training, with its aligned cells' candidates."""
    agreement = np.asarray(model.adata_manager.get_from_registry(AGREEMENT_KEY)).reshape(-1)
    aligned = float((agreement < model.module.agreement_cutoff).mean())
    pairs = aligned * BATCH_SIZE * model.module.n_candidates
    floor = training_floor(model.module, model.adata.n_obs, epochs, BATCH_SIZE, candidate_pairs_per_step=pairs)
    return {**floor, "aligned_fraction": round(aligned, 3)}


def time_scvi(adata, seed: int, epochs: int, n_hidden: int) -> dict:
    """Training time of scvi-tools' ``SCVI`` (ZINB, batch covariate) on ``adata``: a plain VAE, no alignment."""
    adata = adata.copy()
    scvi.model.SCVI.setup_anndata(adata, batch_key=BATCH)
    scvi.settings.seed = seed
    model = scvi.model.SCVI(adata, n_hidden=n_hidden, gene_likelihood="zinb")
    with timed() as timing:
        model.train(max_epochs=epochs, batch_size=BATCH_SIZE, enable_progress_bar=False)
    return {**timing, "n_hidden": n_hidden}


def time_on_original_gene_count(seed: int, epochs: int, n_top: int = 4000) -> dict:
    """Target training time on ``n_top`` most variable genes per species, as many as the original uses.

    With the references on the same data: the TargetVI with eta = 0, and scvi-tools' ``SCVI`` at each of
    ``SCVI_WIDTHS``.
    """
    import scanpy as sc

    def most_variable(adata):
        table = sc.pp.highly_variable_genes(
            adata, flavor="seurat_v3", n_top_genes=n_top, batch_key=BATCH, inplace=False
        )
        return adata[:, table["highly_variable"].to_numpy()].copy()

    mouse, human = (most_variable(adata) for adata in speciesvi.datasets.baron_pancreas(path=SHARED_DATA))
    speciesvi.pp.translate_genes(human, speciesvi.pp.homology_table("human", "mouse"), context=mouse)
    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH, labels_key=LABELS)
    scvi.settings.seed = seed
    context = speciesvi.ContextVI(mouse)
    context.train(max_epochs=epochs, enable_progress_bar=False)
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key=LABELS)
    speciesvi.TargetVI.setup_anndata(human, batch_key=BATCH)
    model, timing = train_target(context, human, seed, epochs, None)
    n_genes = {"mouse": int(mouse.n_vars), "human": int(human.n_vars)}
    _, eta0 = train_target(context, human, seed, epochs, {"eta_start": 0, "eta_max": 0})
    references = {"eta0": eta0, **{f"scvi_{width}": time_scvi(human, seed, epochs, width) for width in SCVI_WIDTHS}}
    return {**timing, "n_genes": n_genes, "floor": floor_for(model, epochs), "references": references}


def summary(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def markdown(results: dict) -> str:
    seeds = results["seeds"]
    lines = [
        "# Aligned target model (Baron mouse -> human)",
        "",
        f"`python benchmarks/bench_target.py --seeds {' '.join(map(str, seeds))} --epochs {results['epochs']}` on a "
        "shared 2-core CPU (torch 2.13.0+cpu). Latent kNN: k = 25 on the mouse latent and labels, applied to the "
        f"human latent; balanced accuracy over the {len(results['types'])} types with >= 20 cells in both species.",
        "",
        "| seed | balanced accuracy (default, eta 10 -> 25) | balanced accuracy (eta = 0) |",
        "| --- | --- | --- |",
    ]
    for seed in seeds:
        lines.append(
            f"| {seed} | {results['aligned'][str(seed)]['balanced_accuracy']:.3f} "
            f"| {results['eta0'][str(seed)]['balanced_accuracy']:.3f} |"
        )
    aligned = [results["aligned"][str(s)]["balanced_accuracy"] for s in seeds]
    eta0 = [results["eta0"][str(s)]["balanced_accuracy"] for s in seeds]
    lines += [f"| mean ± sd | {summary(aligned)} | {summary(eta0)} |", "", "Per-type recall (default model):", ""]
    lines += ["| cell type | " + " | ".join(f"seed {s}" for s in seeds) + " |", "| --- |" + " --- |" * len(seeds)]
    for cell_type in results["types"]:
        recalls = [f"{results['aligned'][str(s)]['recall'][cell_type]:.3f}" for s in seeds]
        lines.append(f"| {cell_type} | " + " | ".join(recalls) + " |")
    speed = results["speed"]
    lines += [
        "",
        "## Target training time (40 epochs, same data, one run)",
        "",
        "| implementation | wall time (s) | process CPU time (s) | load average (start, end) |",
        "| --- | --- | --- | --- |",
        f"| speciesvi `TargetVI.train` | {speed['speciesvi']['wall_s']} | {speed['speciesvi']['cpu_s']} "
        f"| {speed['speciesvi']['loadavg']} |",
    ]
    same = speed.get("speciesvi_original_gene_count")
    if same is not None:
        lines.append(
            f"| speciesvi `TargetVI.train`, {same['n_genes']['human']} human / {same['n_genes']['mouse']} mouse "
            f"most variable genes (the original's gene count) | {same['wall_s']} | {same['cpu_s']} | {same['loadavg']} |"
        )
    references = (same or {}).get("references", {})
    labels = {"eta0": "speciesvi `TargetVI.train` with eta = 0 (no alignment term)"}
    labels.update(
        {f"scvi_{width}": f"scvi-tools `SCVI.train` (ZINB, n_hidden={width}, no alignment)" for width in SCVI_WIDTHS}
    )
    for key, label in labels.items():
        if key in references:
            entry = references[key]
            lines.append(
                f"| reference: {label}, the same {same['n_genes']['human']:,} human genes | {entry['wall_s']} "
                f"| {entry['cpu_s']} | {entry['loadavg']} |"
            )
    if "original" in speed:
        original = speed["original"]
        lines.append(f"| scSpecies 0.1.4 `train_target` | {original['wall_s']} | | {original['loadavg']} |")
        lines += ["", f"Speed-up (wall time): {speed['speedup']}x with the demo gene selection"]
        if "speedup_original_gene_count" in speed:
            lines[-1] += f", {speed['speedup_original_gene_count']}x with as many genes as the original"
        lines[-1] += "."
    eta0 = results["eta0"].get(str(seeds[0]), {}).get("timing")
    if eta0 is not None:
        lines += [
            "",
            f"Without the alignment term (eta = 0, seed {seeds[0]}, demo gene selection, the ablation above) the same "
            f"training takes {eta0['wall_s']} s (load average {eta0['loadavg']}).",
        ]
    lines += [
        "",
        "Lower bounds on this machine (`benchmarks/_step_floor.py`): per step, the model's matrix products, a "
        "fused Adam update, one pass of the likelihood's transcendental functions over the batch, and the "
        "scoring of the aligned cells' candidates (bfloat16 decoding and the same transcendental passes over "
        "every candidate and gene).",
        "",
        "| genes | steps | aligned cells | matrix products float32 / bfloat16 (ms) | Adam (ms) | likelihood (ms) "
        "| candidates (ms) | floor float32 (s) | floor bfloat16 (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, entry in (("demo selection", speed["speciesvi"]), ("4,000 + 4,000", same)):
        floor = (entry or {}).get("floor")
        if floor is None:
            continue
        lines.append(
            f"| {label} | {floor['steps']} | {floor['aligned_fraction']:.0%} | {floor['matmul_float32_ms']} / "
            f"{floor['matmul_bfloat16_ms']} | {floor['adam_ms']} | {floor['likelihood_ms']} | {floor['candidate_ms']} "
            f"| {floor['floor_float32_s']} | {floor['floor_bfloat16_s']} |"
        )
    if "original" in speed:
        lines += ["", f"A 5x speed-up over the original means {speed['original']['wall_s'] / 5:.1f} s."]
        default_scvi = references.get(f"scvi_{SCVI_WIDTHS[0]}")
        if default_scvi is not None:
            lines[-1] += (
                f" On the same data, epochs and minibatch size, scvi-tools' own `SCVI`, a plain VAE with no "
                f"alignment term and a narrower network, takes {default_scvi['wall_s']} s on this machine."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--skip-original", action="store_true")
    parser.add_argument("--speed-only", action="store_true", help="only the timings; keep the accuracy figures")
    args = parser.parse_args()
    results: dict = {"seeds": args.seeds, "epochs": args.epochs, "aligned": {}, "eta0": {}, "speed": {}}
    if args.speed_only:
        results = {**json.loads((BENCH / "results" / "target.json").read_text()), "speed": {}}
    contexts = {}
    for seed in args.seeds[:1] if args.speed_only else args.seeds:
        target, _ = train_models(seed, args.epochs, retrain=False)
        if not args.speed_only:
            results["aligned"][str(seed)] = latent_knn(target)
        contexts[seed] = target.context_model
    if not args.speed_only:
        results["types"] = sorted(results["aligned"][str(args.seeds[0])]["recall"])
    _, human = load_pair()  # translate_genes, then select_genes: the genes of the cached models
    speciesvi.pp.homolog_neighbors(human, contexts[args.seeds[0]].adata, labels_key=LABELS)
    speciesvi.TargetVI.setup_anndata(human, batch_key=BATCH)
    for seed in [] if args.speed_only else args.seeds:
        model, timing = train_target(contexts[seed], human, seed, args.epochs, {"eta_start": 0, "eta_max": 0})
        results["eta0"][str(seed)] = {**latent_knn(model), "timing": timing}
    model, results["speed"]["speciesvi"] = train_target(
        contexts[args.seeds[0]], human, args.seeds[0], args.epochs, None
    )
    results["speed"]["speciesvi"]["floor"] = floor_for(model, args.epochs)
    results["speed"]["speciesvi_original_gene_count"] = time_on_original_gene_count(args.seeds[0], args.epochs)
    if not args.skip_original:
        load = os.getloadavg()[0]
        original = run_original(
            BENCH / ".work" / "target_original",
            seed=369963,
            stages="target",
            epochs_context=args.epochs,
            epochs_target=args.epochs,
        )
        results["speed"]["original"] = {
            "wall_s": original["timings"]["stages_s"]["target_training"],
            "loadavg": [round(load, 2), round(os.getloadavg()[0], 2)],
        }
        results["speed"]["speedup"] = round(
            results["speed"]["original"]["wall_s"] / results["speed"]["speciesvi"]["wall_s"], 2
        )
        results["speed"]["speedup_original_gene_count"] = round(
            results["speed"]["original"]["wall_s"] / results["speed"]["speciesvi_original_gene_count"]["wall_s"], 2
        )
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "target.json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (BENCH / "results" / "target.md").write_text(text)
    (BENCH.parent / "docs" / "benchmarks" / "target.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
