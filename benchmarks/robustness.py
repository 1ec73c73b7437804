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
from scipy.special import ndtri

from benchmarks._robustness_data import DIRECTIONS, GENE_SETS, cases, prepare_case
from benchmarks._robustness_page import METHODS, SDS_GRID, TYPES, VARIANTS, markdown, summarise
from benchmarks.run import (
    MIN_CELLS,
    PEER_SCRIPTS,
    PEERS,
    REPO,
    SUITE,
    UNASSIGNED,
    machine,
    peer_python,
    update_index,
    write,
    write_page,
)
from speciesvi.tl import evaluate_labels
from speciesvi.tl._novelty import NOVELTY_SDS

SCRIPTS = {**PEER_SCRIPTS, "speciesvi": ("speciesvi_robust.py", None, None)}


def suite_root(subsample: int | None) -> Path:
    """Cache folder of the suite; a subsampled smoke test has its own."""
    return SUITE / ("robustness" if not subsample else f"robustness_sub{subsample}")


#: Peers run once, as seed 0: those whose result does not depend on the seed (no training from random weights),
#: and scVI + scANVI, three 40-epoch trainings (about 10 minutes a run on two CPU cores; the page says so).
SEED_FREE = ("knn_homologous", "ingest", "celltypist", "scanvi")


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

    labels = frame[f"label:{variant}"].astype(str)
    true = truth.loc[labels.index].astype(str)
    _, bacc, recall = evaluate_labels(true, labels, reference=reference, min_cells=MIN_CELLS)
    _, _, recall_any = evaluate_labels(true, labels, reference=reference, min_cells=1)
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
        # the robust z-score u behind p_known = Phi(NOVELTY_SDS - u): Unassigned under other rules, u > sds
        u = NOVELTY_SDS - ndtri(np.clip(np.nan_to_num(p_known, nan=1.0), 0.0, 1.0))
        for group, mask in (("shared", ~novel), ("novel", novel)):
            out[f"{group}_unassigned_at"] = (
                {str(sds): float((u[mask] > sds).mean()) for sds in SDS_GRID} if mask.any() else {}
            )
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
                if args.no_self and case["kind"] == "self":
                    continue
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
