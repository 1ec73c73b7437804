"""The robustness suite: speciesvi and its peers in both directions, on two gene sets, and on self-projections.

    python benchmarks/run.py --suite robustness [--seeds 0 1 2] [--epochs 40] [--directions ...] [--genes ...]
        [--methods speciesvi knn_homologous ingest celltypist scanvi] [--accelerator cpu]

Cases (``benchmarks/_robustness_data.py``): ``mouse_to_human`` and ``human_to_mouse`` on the genes of
``pp.select_genes`` (``select``) or on every gene (``all``), and the self-projection of each context species
(its largest donor labelled from its other donors). Every method runs per case and seed in a fresh process
(``benchmarks/peers/``; speciesvi through ``peers/speciesvi_robust.py``), cached in
``benchmarks/.work/suite/robustness/<case>/<method>/seed<N>/``: a rerun computes only what is missing, and a
failed run (its ``run.log`` kept) is listed on the page without stopping the others. Only this module reads
the target labels (``truth.csv``), after the predictions are written. Writes
``benchmarks/results/suite_robustness.{json,md}``, ``docs/benchmarks/suite_robustness.md`` and a block in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._robustness_data import DIRECTIONS, GENE_SETS, case_name, cases, describe, prepare_case
from benchmarks.run import (
    MIN_CELLS,
    PEER_SCRIPTS,
    PEERS,
    REPO,
    SUITE,
    UNASSIGNED,
    fmt,
    machine,
    mean_sd,
    peer_python,
    update_index,
    write,
    write_page,
)

METHODS = ("speciesvi", "knn_homologous", "ingest", "celltypist", "scanvi")
SCRIPTS = {**PEER_SCRIPTS, "speciesvi": ("speciesvi_robust.py", None, None)}
#: table columns: (method, variant, header); the first four are speciesvi's, the rest the peers'
VARIANTS = [
    ("speciesvi", "transfer_all", "speciesvi (every cell labelled)"),
    ("speciesvi", "transfer", "speciesvi at the defaults"),
    ("speciesvi", "latent_knn", "speciesvi latent kNN"),
    ("speciesvi", "data_level", "speciesvi data-level"),
    ("knn_homologous", "knn", "kNN homologous"),
    ("ingest", "ingest", "ingest"),
    ("ingest", "ingest_hvg", "ingest HVG"),
    ("celltypist", "best_match", "CellTypist best match"),
    ("celltypist", "majority_voting", "CellTypist majority voting"),
    ("celltypist", "prob_match", "CellTypist prob match"),
    ("celltypist", "fs_best_match", "CellTypist FS best match"),
    ("celltypist", "fs_majority_voting", "CellTypist FS majority voting"),
    ("scanvi", "scanvi", "scVI + scANVI"),
]
TYPES = {"PP": "pancreatic PP cell", "D": "pancreatic D cell", "A": "pancreatic A cell"}
STEPS = {
    "homolog_neighbors": "`pp.homolog_neighbors`",
    "context_training": "ContextVI setup + training",
    "target_training": "TargetVI setup + training",
    "transfer_labels": "`transfer_labels()`",
    "transfer_labels_all": "`transfer_labels(unassigned_threshold=None)`",
    "latent_knn": "latent kNN",
    "homolog_lfc": "one `homolog_lfc` (one cell type)",
}


def suite_root(subsample: int | None) -> Path:
    """Cache folder of the suite; a subsampled smoke test has its own."""
    return SUITE / ("robustness" if not subsample else f"robustness_sub{subsample}")


#: Peers whose result does not depend on the seed (no training from random weights): run once, as seed 0.
SEED_FREE = ("knn_homologous", "ingest", "celltypist")


def run_folder(root: Path, case: str, method: str, seed: int) -> Path:
    """Where one run is cached (seed-free peers: always the seed-0 folder)."""
    return root / case / method / f"seed{0 if method in SEED_FREE else seed}"


def finished(folder: Path) -> bool:
    """Whether a run left both result files."""
    return (folder / "result.json").is_file() and (folder / "predictions.csv").is_file()


def run_method(root: Path, case: str, method: str, seed: int, files: dict, args: argparse.Namespace) -> None:
    """Run one method on one case and seed in a fresh process unless cached; a failure is logged, not raised."""
    out = run_folder(root, case, method, seed)
    if finished(out):
        return
    out.mkdir(parents=True, exist_ok=True)
    tag = f"[robustness] {case} {method} seed {seed}"
    try:
        python = peer_python(method)
    except subprocess.CalledProcessError as error:
        (out / "run.log").write_text(f"environment setup failed: {error}\n")
        write(f"{tag}: environment setup failed")
        return
    cmd = [
        python,
        str(PEERS / SCRIPTS[method][0]),
        "--context",
        str(files["context"]),
        "--target",
        str(files["target"]),
    ]
    cmd += ["--out", str(out), "--seed", str(seed), "--epochs", str(args.epochs), "--accelerator", args.accelerator]
    if method == "speciesvi":
        cmd += ["--speciesvi-context", str(files["speciesvi_context"])]
        cmd += ["--speciesvi-target", str(files["speciesvi_target"])]
        if seed != min(args.seeds):
            cmd.append("--skip-lfc")  # one timed homolog LFC call per case is enough
    env = dict(os.environ, MPLBACKEND="Agg")
    if SCRIPTS[method][1] is not None:
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
    write(f"{tag}: running (log {out / 'run.log'})")
    start = time.perf_counter()
    with open(out / "run.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO), check=False)
    status = "done" if proc.returncode == 0 and finished(out) else f"FAILED (exit {proc.returncode})"
    write(f"{tag}: {status} in {time.perf_counter() - start:.0f} s")


def score(truth: pd.Series, reference: pd.Series, frame: pd.DataFrame, variant: str) -> dict:
    """Balanced accuracy, recalls and (with ``p_known``) the novelty measures of one variant of one run."""
    from sklearn.metrics import roc_auc_score

    import speciesvi

    labels = frame[f"label:{variant}"].astype(str)
    true = truth.loc[labels.index].astype(str)
    _, bacc, recall = speciesvi.tl.evaluate_labels(true, labels, reference=reference, min_cells=MIN_CELLS)
    _, _, recall_any = speciesvi.tl.evaluate_labels(true, labels, reference=reference, min_cells=1)
    out = {
        "balanced_accuracy": None if np.isnan(bacc) else float(bacc),
        "eval_types": sorted(recall.index),
        "recall": {k: float(v) for k, v in recall.items()},
        "type_recall": {short: recall_any.get(name) for short, name in TYPES.items()},
    }
    if f"p_known:{variant}" in frame:
        known = reference.value_counts()
        novel = ~true.isin(known.index[known >= MIN_CELLS]).to_numpy()
        unassigned = (labels == UNASSIGNED).to_numpy()
        p_known = frame[f"p_known:{variant}"].to_numpy(dtype=float)
        out["novel_unassigned"] = float(unassigned[novel].mean()) if novel.any() else None
        out["shared_unassigned"] = float(unassigned[~novel].mean()) if (~novel).any() else None
        both = novel.any() and (~novel).any()
        out["novel_auroc"] = float(roc_auc_score(novel, np.nan_to_num(1.0 - p_known, nan=1.0))) if both else None
    return out


def collect(root: Path, case: dict, methods: list[str], seeds: list[int]) -> tuple[dict, list[str]]:
    """Scores of every finished run of one case, and the runs that are missing or failed."""
    folder = root / case["case"] / "data"
    truth = pd.read_csv(folder / "truth.csv", index_col=0)["label"].astype(str)
    reference = pd.read_csv(folder / "reference.csv", index_col=0)["label"].astype(str)
    runs, missing = {}, []
    for method in methods:
        for seed in seeds[:1] if method in SEED_FREE else seeds:
            out = run_folder(root, case["case"], method, seed)
            if not finished(out):
                state = "failed" if (out / "run.log").is_file() else "not run"
                missing.append(f"{case['case']} {method} seed {seed}: {state}")
                continue
            result = json.loads((out / "result.json").read_text())
            frame = pd.read_csv(out / "predictions.csv", index_col=0)
            result["scores"] = {
                v: score(truth, reference, frame, v) for m, v, _ in VARIANTS if m == method and f"label:{v}" in frame
            }
            runs.setdefault(method, {})[seed] = result
    return runs, missing


def per_seed(runs: dict, method: str, variant: str, key: str = "balanced_accuracy") -> dict[int, float]:
    """One score of a variant per seed."""
    out = {}
    for seed, result in runs.get(method, {}).items():
        value = result["scores"].get(variant, {}).get(key)
        if value is not None:
            out[seed] = value
    return out


def check(ours: dict[int, float], theirs: dict[int, float]) -> str:
    """``yes``/``no`` for mean(ours) >= mean(theirs), with the mean and the per-seed minimum of the difference."""
    if not ours or not theirs:
        return "n/a"
    diff = mean_sd(ours.values())[0] - mean_sd(theirs.values())[0]
    paired = [ours[s] - theirs[s] for s in ours if s in theirs]
    low = f"; per-seed min {min(paired):+.3f}" if paired else ""
    return f"{'yes' if diff >= 0 else 'no'} ({diff:+.3f}{low})"


def summarise(case: dict, runs: dict) -> dict:
    """The table cells of one case."""
    cells = {f"{m}:{v}": fmt(list(per_seed(runs, m, v).values())) for m, v, _ in VARIANTS}
    ours = per_seed(runs, "speciesvi", "transfer_all")
    types = per_seed(runs, "speciesvi", "transfer_all", "type_recall").values()
    cells["speciesvi:types"] = " / ".join(
        fmt([r[short] for r in types if r.get(short) is not None], 2) for short in ("PP", "D")
    )
    peers = [(m, v, name) for m, v, name in VARIANTS if m != "speciesvi" and per_seed(runs, m, v)]
    best = max(peers, key=lambda p: mean_sd(per_seed(runs, p[0], p[1]).values())[0], default=None)
    best_scores = per_seed(runs, best[0], best[1]) if best else {}
    cells["best_peer"] = f"{best[2]}: {fmt(list(best_scores.values()))}" if best else "n/a"
    cells["vs_data_level"] = check(ours, per_seed(runs, "speciesvi", "data_level"))
    cells["vs_best_peer"] = check(ours, best_scores)
    return cells


def markdown(payload: dict) -> tuple[str, str]:
    """The page and its block for docs/benchmarks.md."""
    m, infos, rows = payload["machine"], payload["cases"], payload["rows"]
    headers = ["case", VARIANTS[0][2], "speciesvi PP / D recall", *[name for _, _, name in VARIANTS[1:]]]
    headers += ["best peer", "speciesvi ≥ data-level", "speciesvi ≥ best peer"]
    keys = ["speciesvi:transfer_all", "speciesvi:types", *[f"{mm}:{v}" for mm, v, _ in VARIANTS[1:]]]
    keys += ["best_peer", "vs_data_level", "vs_best_peer"]
    table = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for case, cells in rows.items():
        table.append(f"| {case_name(infos[case])} | " + " | ".join(cells[k] for k in keys) + " |")
    names = list(rows)
    times = ["| step | " + " | ".join(case_name(infos[c]) for c in names) + " |", "|" + " --- |" * (len(names) + 1)]
    genes = [infos[c]["n_genes"] for c in names]
    times.append(
        "| genes: context / target / one-to-one homologous | "
        + " | ".join(f"{g['context']:,} / {g['target']:,} / {g['homologous_one2one']:,}" for g in genes)
        + " |"
    )
    for step, label in STEPS.items():
        values = [
            [r.get("steps_s", {}).get(step) for r in payload["runs"][c].get("speciesvi", {}).values()] for c in names
        ]
        times.append(
            f"| {label} (s) | " + " | ".join(fmt([v for v in vals if v is not None], 1) for vals in values) + " |"
        )
    lfc_types = {
        c: {r["lfc"]["cell_type"] for r in payload["runs"][c].get("speciesvi", {}).values() if r.get("lfc")} - {None}
        for c in names
    }
    novelty = [
        "| case | novel cells (types with < 20 context cells) | novel Unassigned | shared Unassigned | AUROC of 1 - p_known |"
    ]
    novelty.append("| --- | --- | --- | --- | --- |")
    for c in names:
        runs = payload["runs"][c]
        vals = [
            fmt(list(per_seed(runs, "speciesvi", "transfer", k).values()))
            for k in ("novel_unassigned", "shared_unassigned", "novel_auroc")
        ]
        novelty.append(f"| {case_name(infos[c])} | {infos[c].get('novel', 'n/a')} | " + " | ".join(vals) + " |")
    recall = ["| method | " + " | ".join(case_name(infos[c]) for c in names) + " |", "|" + " --- |" * (len(names) + 1)]
    for method, variant, name in VARIANTS:
        cells = []
        for c in names:
            scores = [
                r["scores"][variant]["type_recall"]
                for r in payload["runs"][c].get(method, {}).values()
                if variant in r["scores"]
            ]
            cells.append(" / ".join(fmt([s[t] for s in scores if s.get(t) is not None], 2) for t in TYPES))
        recall.append(f"| {name} | " + " | ".join(cells) + " |")
    missing = [f"- {line}" for line in payload["missing"]] or ["- none"]
    left_out = [m for m in METHODS if m not in payload["methods"]]
    if left_out:
        missing.append(f"- methods not in this run (their columns are n/a): {', '.join(left_out)}")
    machine_line = (
        f"{m['cpu']} ({m['cpu_count']} cores, possibly shared with other jobs; torch {m['torch']} with "
        f"{m['torch_threads']} threads, speciesvi {m['speciesvi']}, scvi-tools {m['scvi-tools']}, CUDA {m['cuda']}; "
        f"accelerator: {payload['accelerator']})"
    )
    sub = payload["subsample"]
    lines = [
        "# Suite: robustness (both directions, two gene sets, self-projection)",
        "",
        f"`{payload['command']}` on {machine_line}. Written {payload['written']}. Epochs: {payload['epochs']} for "
        f"every neural model; seeds: {', '.join(map(str, payload['seeds']))}."
        + (f" **Smoke test: {sub} random cells per species, not a result.**" if sub else ""),
        "",
        "## Label transfer",
        "",
        *table,
        "",
        f"Balanced accuracy (mean ± sd over seeds): mean recall over the target types with >= {MIN_CELLS} cells in "
        "both the context and the target; every cell counts, 'Unassigned' as wrong. 'speciesvi' is "
        "`transfer_labels(unassigned_threshold=None)` (every cell labelled, as the peers label them); 'at the "
        "defaults' keeps its novelty rule. PP / D (and A below) recall: over all target cells of the type whenever "
        "the context holds it. Best peer: the peer variant with the highest mean. Checks are judged on the means; "
        "in parentheses the difference of the means and its minimum over seeds (paired by seed).",
        "",
        "## Novel cell types (speciesvi at the defaults)",
        "",
        *novelty,
        "",
        "Novel: target cells whose type has fewer than 20 context cells (or none); shared: the others. AUROC of "
        "`1 - p_known` for novel against shared cells.",
        "",
        "## speciesvi times, select vs all genes",
        "",
        *times,
        "",
        "Wall seconds of each step in the speciesvi process (mean ± sd over seeds), on a possibly shared machine. "
        "`homolog_lfc` cell type per case: "
        + ("; ".join(f"{c}: {', '.join(sorted(map(str, ts)))}" for c, ts in lfc_types.items() if ts) or "none")
        + ".",
        "",
        "## PP / D / A recall of every method",
        "",
        *recall,
        "",
        "## Cases and protocol",
        "",
        *[describe(infos[c]) for c in names],
        "- Data: `benchmarks/_robustness_data.py`. speciesvi gets all genes of the case; the peers the one-to-one "
        "homologous genes among them, target genes renamed to the context symbols. Self-projection: identity "
        "homology table through `pp.translate_genes`, then `pp.select_genes`.",
        "- Peers: kNN on homologous genes (k = 25), scanpy ingest (all homologous genes; and `ingest_hvg`, the "
        "context's 2,000 most variable genes as in scanpy's integration tutorial), CellTypist (defaults; and "
        "`feature_selection=True, top_genes=300`, best match and majority voting), scVI + scANVI with a scArches "
        "query. No parameter was chosen by looking at target labels.",
        "",
        "## Missing or failed runs",
        "",
        *missing,
        "",
    ]
    block = [
        "## Suite: robustness",
        "",
        f"Generated by `{payload['command']}`; details on [the robustness page](benchmarks/suite_robustness.md)."
        + (f" Smoke test on {sub} cells per species." if sub else ""),
        "",
        *table,
    ]
    return "\n".join(lines), "\n".join(block)


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces the page."""
    cmd = f"python benchmarks/run.py --suite robustness --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs}"
    if list(args.directions) != list(DIRECTIONS):
        cmd += " --directions " + " ".join(args.directions)
    if list(args.genes) != list(GENE_SETS):
        cmd += " --genes " + " ".join(args.genes)
    methods = [m for m in METHODS if m in args.methods]
    if methods != list(METHODS):
        cmd += " --methods " + " ".join(methods)
    if args.accelerator != "cpu":
        cmd += f" --accelerator {args.accelerator}"
    return cmd + (f" --subsample {args.subsample}" if args.subsample else "")


def robustness_suite(args: argparse.Namespace) -> dict:
    """Prepare every case, run every method and seed that is missing, score them, write the page."""
    root = suite_root(args.subsample)
    methods = [m for m in METHODS if m in args.methods]
    infos, runs, rows, missing = {}, {}, {}, []
    every_case = cases(args.directions, args.genes)
    files_of = {case["case"]: prepare_case(case, root, args.subsample) for case in every_case}
    if not args.no_run:  # every case of the first seed before any case of the next
        for seed in args.seeds:
            for case in every_case:
                for method in methods:
                    if method not in SEED_FREE or seed == args.seeds[0]:
                        run_method(root, case["case"], method, seed, files_of[case["case"]], args)
    for case in every_case:
        files = files_of[case["case"]]
        infos[case["case"]] = info = json.loads(files["case"].read_text())
        runs[case["case"]], lost = collect(root, case, methods, args.seeds)
        missing += lost
        truth = pd.read_csv(files["truth"], index_col=0)["label"].astype(str)
        known = pd.read_csv(files["reference"], index_col=0)["label"].astype(str).value_counts()
        novel = truth[~truth.isin(known.index[known >= MIN_CELLS])].value_counts()
        info["novel"] = ", ".join(f"{t} {n}" for t, n in novel.items()) or "none"
        rows[case["case"]] = summarise(case, runs[case["case"]])
    payload = {
        "suite": "robustness",
        "command": command(args),
        "machine": machine(),
        "seeds": args.seeds,
        "epochs": args.epochs,
        "accelerator": args.accelerator,
        "subsample": args.subsample,
        "methods": methods,
        "cases": infos,
        "rows": rows,
        "runs": runs,
        "missing": missing,
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    text, block = markdown(payload)
    write_page("suite_robustness", text, payload)
    update_index("robustness", block)
    write(text)
    return payload
