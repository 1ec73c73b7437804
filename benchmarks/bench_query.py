"""scArches query mapping of a new human donor, and an scvi-tools SCVI reference as context (Baron mouse -> human).

    python benchmarks/bench_query.py [--seed 0] [--epochs 40] [--query-epochs 40 ...] [--holdout human4]
    python benchmarks/bench_query.py --skip-full --skip-scvi --query-epochs 40 200 --out query_epochs
    python benchmarks/bench_query.py --markdown-only

Data: the full Baron pair with the demo pair's gene selection (``load_pair`` of bench_label_transfer.py).
Torch runs on one thread (the machine is shared); the 1-minute load average is recorded around every timing.

1. Query mapping. A ContextVI is trained on all mouse cells (40 epochs, default settings; reused from
   benchmarks/.work/query/ when cached). Then, timed from the data-level neighbours to the trained model:
   - *full*: a TargetVI trained on all four human donors (40 epochs);
   - *reference*: a TargetVI trained on the three other donors (40 epochs);
   - *query*: the held-out donor mapped onto the reference with ``TargetVI.load_query_data`` and
     ``query.train(max_epochs=e)`` for each ``e`` of ``--query-epochs`` (scArches freezing defaults, weight
     decay 0).
   Labels are transferred with ``transfer_labels()`` (defaults) by the full model and by the query model; the
   balanced accuracy is computed on the held-out donor's cells over the 7 cell types with >= 20 cells in both
   species (counted on all cells; "Unassigned" counts as wrong).
2. SCVI reference. ``scvi.model.SCVI`` (scvi-tools defaults, n_latent=10, 40 epochs) is trained on the mouse
   cells, adopted with ``ContextVI.from_scvi_model`` and a TargetVI (all human donors, 40 epochs) is aligned to
   it; its balanced accuracy over all human cells is reported beside the native ContextVI's (the *full* model).

Writes benchmarks/results/<out>.json (default ``query``); the page benchmarks/results/query.md and
docs/benchmarks/query.md is written from query.json (``extra_query_runs`` there holds runs merged from other
invocations, such as the ``query_epochs`` one above).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scvi
import torch

import speciesvi
from speciesvi.model._fingerprint import module_fingerprint

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
from benchmarks.bench_label_transfer import BATCH, LABELS, load_pair  # noqa: E402

WORK = BENCH / ".work" / "query"
MIN_CELLS = 20


class Timer:
    """Wall time of a block with the 1-minute load average at its start and end."""

    def __enter__(self):
        self.load_start = os.getloadavg()[0]
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = round(time.perf_counter() - self.start, 1)
        self.load_end = os.getloadavg()[0]

    def record(self) -> dict:
        return {
            "s": self.s,
            "loadavg_1min_start": round(self.load_start, 2),
            "loadavg_1min_end": round(self.load_end, 2),
        }


def shared_types(human, mouse) -> list[str]:
    """Cell types with at least MIN_CELLS cells in both species (all cells)."""
    t, c = human.obs[LABELS].value_counts(), mouse.obs[LABELS].value_counts()
    return sorted(set(t[t >= MIN_CELLS].index) & set(c[c >= MIN_CELLS].index))


def accuracy(truth: np.ndarray, predicted: np.ndarray, types: list[str], mouse) -> dict:
    """Balanced accuracy and per-type recall over ``types`` (cells of other types are left out)."""
    keep = np.isin(truth, types)
    evaluation = speciesvi.tl.evaluate_labels(truth[keep], predicted[keep], reference=mouse.obs[LABELS], min_cells=1)
    return {
        "balanced_accuracy": round(float(evaluation.balanced_accuracy), 4),
        "recall": {k: round(float(v), 4) for k, v in evaluation.recall.items()},
        "n_cells": {k: int((truth[keep] == k).sum()) for k in types},
    }


def train_context(mouse, seed: int, epochs: int) -> tuple[speciesvi.ContextVI, dict]:
    folder = WORK / f"context_seed{seed}_e{epochs}"
    if (folder / "model.pt").is_file():
        return speciesvi.ContextVI.load(folder, adata=mouse), json.loads(
            (folder.parent / f"{folder.name}.json").read_text()
        )
    scvi.settings.seed = seed
    with Timer() as timer:
        context = speciesvi.ContextVI(mouse)
        context.train(max_epochs=epochs, enable_progress_bar=False)
    context.save(folder, overwrite=True)
    (folder.parent / f"{folder.name}.json").write_text(json.dumps(timer.record()))
    return context, timer.record()


def fit_target(adata, mouse, context, seed: int, epochs: int) -> tuple[speciesvi.TargetVI, dict]:
    """Neighbours, setup and training of a TargetVI (timed together)."""
    scvi.settings.seed = seed
    with Timer() as timer:
        speciesvi.pp.homolog_neighbors(adata, mouse, labels_key=LABELS)
        speciesvi.TargetVI.setup_anndata(adata, batch_key=BATCH)
        target = speciesvi.TargetVI(adata, context)
        target.train(max_epochs=epochs, enable_progress_bar=False)
    return target, timer.record()


def map_query(args, mouse, reference, query_adata, epochs: int, types: list[str]) -> dict:
    """Map the held-out donor onto the reference with ``load_query_data`` and ``epochs`` epochs; timed."""
    query_adata = query_adata.copy()
    reference_state = {k: v.clone() for k, v in reference.module.state_dict().items()}
    scvi.settings.seed = args.seed
    with Timer() as timer:
        speciesvi.TargetVI.prepare_query_anndata(query_adata, reference)
        speciesvi.pp.homolog_neighbors(query_adata, mouse, labels_key=LABELS)
        query = speciesvi.TargetVI.load_query_data(query_adata, reference)
        query.train(max_epochs=epochs, enable_progress_bar=False)
    result = query.transfer_labels()
    truth = query_adata.obs[LABELS].to_numpy(dtype=object)
    labels = result["label"].to_numpy(dtype=object)
    # frozen weights: every reference tensor is a prefix (along the batch axes) of the query model's
    query_state = query.module.state_dict()
    changed = []
    for key, value in reference_state.items():
        new = query_state[key]
        if new.shape != value.shape:
            new = new[tuple(slice(0, s) for s in value.shape)]
        if not torch.equal(new, value):
            changed.append(key)
    return {
        "epochs": epochs,
        "time": timer.record(),
        "accuracy": accuracy(truth, labels, types, mouse),
        "unassigned_share": round(float((labels == "Unassigned").mean()), 4),
        "votes_only": accuracy(
            truth, query.transfer_labels(unassigned_threshold=None)["label"].to_numpy(dtype=object), types, mouse
        ),
        "trainable_tensors": sorted(n for n, p in query.module.named_parameters() if p.requires_grad),
        "reference_tensors_changed": changed,
        "reference_model_untouched": all(
            torch.equal(reference.module.state_dict()[k], v) for k, v in reference_state.items()
        ),
    }


def query_mapping(args, mouse, human, context) -> dict:
    types = shared_types(human, mouse)
    donors = sorted(human.obs[BATCH].unique())
    holdout = args.holdout or donors[-1]
    reference_adata = human[human.obs[BATCH] != holdout].copy()
    query_adata = human[human.obs[BATCH] == holdout].copy()
    context_before = module_fingerprint(context.module)
    out = {"holdout_donor": holdout, "reference_donors": [d for d in donors if d != holdout], "types": types}
    out["n_cells"] = {
        "full": int(human.n_obs),
        "reference": int(reference_adata.n_obs),
        "query": int(query_adata.n_obs),
    }
    out["time"] = {}
    if not args.skip_full:
        full_adata = human.copy()
        full, out["time"]["full"] = fit_target(full_adata, mouse, context, args.seed, args.epochs)
        truth_full = full_adata.obs[LABELS].to_numpy(dtype=object)
        full_labels = full.transfer_labels()["label"].to_numpy(dtype=object)
        in_holdout = (full_adata.obs[BATCH] == holdout).to_numpy()
        out["full_on_holdout"] = accuracy(truth_full[in_holdout], full_labels[in_holdout], types, mouse)
        out["full_all_cells"] = accuracy(truth_full, full_labels, types, mouse)
        votes = full.transfer_labels(unassigned_threshold=None)["label"].to_numpy(dtype=object)
        out["full_on_holdout_votes_only"] = accuracy(truth_full[in_holdout], votes[in_holdout], types, mouse)
    if args.full_only:
        out["context_untouched"] = module_fingerprint(context.module) == context_before
        return out
    reference, out["time"]["reference"] = fit_target(reference_adata, mouse, context, args.seed, args.epochs)
    out["query_runs"] = [map_query(args, mouse, reference, query_adata, e, types) for e in args.query_epochs]
    out["context_untouched"] = module_fingerprint(context.module) == context_before
    return out


def scvi_reference(args, mouse, human_full, native_result: dict) -> dict:
    types = native_result["types"]
    mouse_scvi = mouse.copy()
    scvi.settings.seed = args.seed
    scvi.model.SCVI.setup_anndata(mouse_scvi, batch_key=BATCH, labels_key=LABELS)
    with Timer() as scvi_timer:
        reference = scvi.model.SCVI(mouse_scvi, n_latent=10)
        reference.train(max_epochs=args.epochs, enable_progress_bar=False)
    with Timer() as adopt_timer:
        context = speciesvi.ContextVI.from_scvi_model(reference)
    latent_error = float(np.abs(context.get_latent_representation() - reference.get_latent_representation()).max())
    human = human_full.copy()
    target, target_time = fit_target(human, mouse_scvi, context, args.seed, args.epochs)
    truth = human.obs[LABELS].to_numpy(dtype=object)
    labels = target.transfer_labels()["label"].to_numpy(dtype=object)
    return {
        "scvi_train": scvi_timer.record(),
        "adopt_incl_library_fit": adopt_timer.record(),
        "max_abs_latent_difference_to_scvi": latent_error,
        "target_train": target_time,
        "scvi_context": accuracy(truth, labels, types, mouse),
        "native_context": native_result["full_all_cells"],
    }


def _rec(rec: dict) -> str:
    return f"{rec['s']} | {rec['loadavg_1min_start']}-{rec['loadavg_1min_end']}"


def markdown(results: dict) -> str:
    """The results page (benchmarks/results/query.md and docs/benchmarks/query.md)."""
    q, s = results["query"], results.get("scvi_reference")
    runs = q["query_runs"] + results.get("extra_query_runs", [])
    full_time = q["time"]["full"]["s"]
    lines = [
        "# Query mapping and pretrained references (Baron mouse -> human)",
        "",
        f"`{results['command']}` on a shared {os.cpu_count()}-core CPU ({results['platform']}), torch on 1 thread, "
        f"seed {results['seed']}; speciesvi {results['versions']['speciesvi']}, scvi-tools "
        f"{results['versions']['scvi-tools']}, torch {results['versions']['torch']}. The machine may run other jobs: "
        "the 1-minute load average is given with each timing.",
        "",
        "## New donor mapped with `load_query_data`",
        "",
        f"Context: ContextVI on all mouse cells, {results['epochs']} epochs, defaults. *Full*: TargetVI on all four "
        f"human donors; *reference*: TargetVI on {', '.join(q['reference_donors'])}; both {results['epochs']} epochs, "
        f"defaults. *Query*: {q['holdout_donor']} ({q['n_cells']['query']} cells) mapped onto the reference with "
        "`TargetVI.load_query_data` (scArches defaults: only the new batch's columns of the first outer-encoder and "
        "decoder layers, its dispersion and the library encoder train, the new batch's weights starting at the mean "
        "of the reference batches'; weight decay 0). Times include the "
        "data-level neighbours and the setup.",
        "",
        "| model | cells | epochs | time (s) | load avg (1 min) | time / full |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| full (all donors) | {q['n_cells']['full']} | {results['epochs']} | {_rec(q['time']['full'])} | 1 |",
        f"| reference (three donors) | {q['n_cells']['reference']} | {results['epochs']} | {_rec(q['time']['reference'])} "
        f"| {q['time']['reference']['s'] / full_time:.2f} |",
    ]
    for run in runs:
        lines.append(
            f"| query ({q['holdout_donor']}){run.get('note', '')} | {q['n_cells']['query']} | {run['epochs']} "
            f"| {_rec(run['time'])} | {run['time']['s'] / full_time:.2f} |"
        )
    lines += [
        "",
        f"Balanced accuracy of `transfer_labels()` (defaults) on the cells of {q['holdout_donor']}, over the "
        f"{len(q['types'])} types with >= 20 cells in both species (counted on all cells; Unassigned counts as wrong). "
        "Recall per type:",
        "",
        "| cell type | cells | full model | "
        + " | ".join(f"query, {r['epochs']} epochs{r.get('note', '')}" for r in runs)
        + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in runs) + " |",
    ]
    for name in q["types"]:
        cells = q["full_on_holdout"]["n_cells"][name]
        values = [q["full_on_holdout"]["recall"].get(name, float("nan"))]
        values += [r["accuracy"]["recall"].get(name, float("nan")) for r in runs]
        lines.append(f"| {name} | {cells} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    full_bacc = q["full_on_holdout"]["balanced_accuracy"]
    lines += [
        f"| **balanced accuracy** | | **{full_bacc:.3f}** | "
        + " | ".join(f"**{r['accuracy']['balanced_accuracy']:.3f}**" for r in runs)
        + " |",
        "| query - full | | | "
        + " | ".join(f"{r['accuracy']['balanced_accuracy'] - full_bacc:+.3f}" for r in runs)
        + " |",
    ]
    if "votes_only" in runs[-1] and "full_on_holdout_votes_only" in q:
        lines.append(
            f"| votes only (no Unassigned) | | {q['full_on_holdout_votes_only']['balanced_accuracy']:.3f} | "
            + " | ".join(f"{r['votes_only']['balanced_accuracy']:.3f}" if "votes_only" in r else "" for r in runs)
            + " |"
        )
    lines += [
        "",
        f"The full model's balanced accuracy over all human cells: {q['full_all_cells']['balanced_accuracy']:.3f}. "
        "Per-type figures on one donor rest on few cells (1 endothelial cell; 13 to 15 PP, D and stellate cells).",
        "",
        f"Frozen weights: reference tensors changed in the query models: "
        f"{sorted({k for r in runs for k in r['reference_tensors_changed']}) or 'none'} (the library encoder "
        f"trains, as scvi-tools' l_encoder); reference model untouched: "
        f"{all(r['reference_model_untouched'] for r in runs)}; context model untouched: {q['context_untouched']}. "
        f"Trainable tensors: {', '.join(f'`{n}`' for n in runs[0]['trainable_tensors'])}.",
    ]
    lines += _seed_table(results)
    if results.get("notes"):
        lines += ["", results["notes"]]
    if s:
        lines += [
            "",
            "## scvi-tools SCVI model as the context",
            "",
            f"`scvi.model.SCVI(mouse, n_latent=10)` (scvi-tools defaults otherwise) trained {results['epochs']} epochs "
            f"({s['scvi_train']['s']} s, load {s['scvi_train']['loadavg_1min_start']}), adopted with "
            f"`ContextVI.from_scvi_model` ({s['adopt_incl_library_fit']['s']} s including the 10-epoch library-encoder "
            f"fit; largest difference of the latent means to SCVI's: {s['max_abs_latent_difference_to_scvi']:.1e}), then "
            f"a TargetVI on all human cells ({results['epochs']} epochs, {s['target_train']['s']} s, load "
            f"{s['target_train']['loadavg_1min_start']}). Balanced accuracy of `transfer_labels()` over all human cells "
            "and the 7 shared types, beside the native ContextVI (the *full* model above):",
            "",
            "| cell type | native ContextVI | SCVI as context |",
            "| --- | --- | --- |",
        ]
        for name in q["types"]:
            lines.append(
                f"| {name} | {s['native_context']['recall'].get(name, float('nan')):.3f} "
                f"| {s['scvi_context']['recall'].get(name, float('nan')):.3f} |"
            )
        lines.append(
            f"| **balanced accuracy** | **{s['native_context']['balanced_accuracy']:.3f}** "
            f"| **{s['scvi_context']['balanced_accuracy']:.3f}** |"
        )
    return "\n".join(lines) + "\n"


def _seed_table(results: dict) -> list[str]:
    """Query against full model over this run's seed and the runs of ``--out query_seed<N>`` (first query run each)."""
    runs = [results] + [json.loads(f.read_text()) for f in sorted((BENCH / "results").glob("query_seed*.json"))]
    runs = [r for r in runs if r["query"].get("query_runs") and "full_on_holdout" in r["query"]]
    if len(runs) < 2:
        return []
    lines = [
        "",
        "### Over seeds",
        "",
        "The same comparison per seed (`python benchmarks/bench_query.py --seed N --skip-scvi --out query_seedN` for "
        "the other seeds; context, reference, full and query models all retrained with that seed):",
        "",
        "| seed | full model | query | query - full | query Unassigned | time full (s) | time query (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    diffs = []
    for r in runs:
        q = r["query"]
        full, query = q["full_on_holdout"]["balanced_accuracy"], q["query_runs"][0]["accuracy"]["balanced_accuracy"]
        diffs.append(query - full)
        lines.append(
            f"| {r['seed']} | {full:.3f} | {query:.3f} | {query - full:+.3f} | "
            f"{q['query_runs'][0]['unassigned_share']:.3f} | {q['time']['full']['s']} | {q['query_runs'][0]['time']['s']} |"
        )
    fulls = [r["query"]["full_on_holdout"]["balanced_accuracy"] for r in runs]
    queries = [r["query"]["query_runs"][0]["accuracy"]["balanced_accuracy"] for r in runs]
    lines.append(
        f"| **mean ± sd** | **{np.mean(fulls):.3f} ± {np.std(fulls, ddof=1):.3f}** | "
        f"**{np.mean(queries):.3f} ± {np.std(queries, ddof=1):.3f}** | **{np.mean(diffs):+.3f}** | | | |"
    )
    return lines


def write_markdown() -> str:
    """Write the page from benchmarks/results/query.json."""
    text = markdown(json.loads((BENCH / "results" / "query.json").read_text()))
    (BENCH / "results" / "query.md").write_text(text)
    (REPO / "docs" / "benchmarks" / "query.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--query-epochs", type=int, nargs="+", default=[40])
    parser.add_argument("--holdout", default=None, help="donor to map as the query (default: the last in sorted order)")
    parser.add_argument("--skip-scvi", action="store_true", help="leave out the SCVI-reference part")
    parser.add_argument("--skip-full", action="store_true", help="leave out the model trained on all donors")
    parser.add_argument("--full-only", action="store_true", help="only the model trained on all donors")
    parser.add_argument("--out", default="query", help="results name: benchmarks/results/<out>.json")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the page from query.json")
    args = parser.parse_args()
    if args.markdown_only:
        print(write_markdown())
        return
    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)

    mouse, human = load_pair()  # translate_genes, then select_genes
    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH, labels_key=LABELS)
    context, context_time = train_context(mouse, args.seed, args.epochs)
    results = {
        "command": "python benchmarks/bench_query.py " + " ".join(sys.argv[1:]),
        "platform": f"{platform.machine()}, {platform.python_version()}",
        "versions": {"speciesvi": speciesvi.__version__, "scvi-tools": scvi.__version__, "torch": torch.__version__},
        "seed": args.seed,
        "epochs": args.epochs,
        "query_epochs": args.query_epochs,
        "context_train": context_time,
    }
    out = BENCH / "results" / f"{args.out}.json"
    results["query"] = query_mapping(args, mouse, human, context)
    print(json.dumps(results["query"], indent=1), flush=True)
    out.write_text(json.dumps(results, indent=2))
    if not args.skip_scvi and not args.skip_full and not args.full_only:
        results["scvi_reference"] = scvi_reference(args, mouse, human, results["query"])
        print(json.dumps(results["scvi_reference"], indent=1), flush=True)
        out.write_text(json.dumps(results, indent=2))
    if args.out == "query":
        print(write_markdown())


if __name__ == "__main__":
    main()
