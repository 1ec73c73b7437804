"""One entry point for the benchmark suites: speciesvi against the original scSpecies and the usual alternatives.

    python benchmarks/run.py --suite baron   [--seeds 0 1 2] [--epochs 40] [--accelerator cpu]
    python benchmarks/run.py --suite scaling [--sizes 10000 30000] [--original-sizes ...]
    python benchmarks/run.py --suite flops
    python benchmarks/run.py --suite robustness [--seeds 0 1 2] [--epochs 40] [--directions ...] [--genes ...]
    python benchmarks/run.py --suite all

Suites:

* ``baron``: the Baron pancreas pair (../shared/data; mouse context -> human target, ``cell_ontology_class``,
  ``donor`` batches), every method in a fresh process (peers in ``benchmarks/peers/``; CellTypist and the
  original in their own virtual environments, built on first use by ``benchmarks/peers/setup_*.sh``), per
  seed. Per-method results are cached in ``benchmarks/.work/suite/`` (delete a folder to recompute it), so a
  rerun computes only what is missing. Writes ``benchmarks/results/suite_baron.{json,md}`` and
  ``docs/benchmarks/suite_baron.md``.
* ``scaling``: speciesvi on real Baron cells tiled with noise (binomial thinning, as
  ``benchmarks/bench_label_transfer_scale.py``) to n target x n context cells; wall time and peak memory of
  ``pp.homolog_neighbors``, one training epoch of ContextVI and of TargetVI, ``transfer_labels`` and
  ``homolog_lfc`` (skipped while ``TargetVI`` has none), each in a fresh process; the original (one epoch
  each, then its label transfer) at ``--original-sizes``. Log-log plot and fitted growth exponents. Writes
  ``benchmarks/results/suite_scaling.{json,md}``, ``docs/benchmarks/suite_scaling.md`` and
  ``docs/benchmarks/suite_scaling.png``.
* ``robustness``: speciesvi and the peers (with their best-practice variants) in both directions
  (``--directions mouse_to_human human_to_mouse``), on the genes of ``pp.select_genes`` and on all genes
  (``--genes select all``), plus the self-projection of each context species (its largest donor held out); see
  ``benchmarks/robustness.py``. Writes ``benchmarks/results/suite_robustness.{json,md}`` and
  ``docs/benchmarks/suite_robustness.md``. Not part of ``all``.
* ``flops``: the similarity kernel's achieved FLOP/s beside this machine's dense matmul FLOP/s. Writes
  ``benchmarks/results/suite_flops.{json,md}`` and ``docs/benchmarks/suite_flops.md``.

Every page and the summary block in ``docs/benchmarks.md`` are generated from the cached results; no number
is typed by hand. ``--accelerator gpu`` is passed to every neural method (speciesvi, scANVI); the original
picks CUDA by itself when it sees one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from benchmarks._original import run_original  # noqa: E402

SUITE = BENCH / ".work" / "suite"
PEERS = BENCH / "peers"
RESULTS = BENCH / "results"
DOCS = REPO / "docs" / "benchmarks"
DOCS_INDEX = REPO / "docs" / "benchmarks.md"
ORIGINAL_EXTRA = RESULTS / "original_seed369963"  # a finished run of the original, counted as one more seed
LABELS = "cell_ontology_class"
BATCH = "donor"
NOVEL = "pancreatic acinar cell"
UNASSIGNED = "Unassigned"
DROPPED = "(dropped by the original)"
MIN_CELLS = 20

#: method -> (peer script, virtual environment or None for this one, setup script)
PEER_SCRIPTS = {
    "speciesvi": ("speciesvi_peer.py", None, None),
    "speciesvi_fresh": ("speciesvi_peer.py", None, None),
    "knn_homologous": ("knn_homologous.py", None, None),
    "ingest": ("ingest.py", None, None),
    "celltypist": ("celltypist_peer.py", BENCH / ".envs" / "celltypist", PEERS / "setup_celltypist_env.sh"),
    "scanvi": ("scanvi_peer.py", None, None),
}
#: table rows: (method, variant, display name)
ROWS = [
    ("speciesvi", "transfer", "speciesvi `transfer_labels`"),
    ("speciesvi", "transfer_all", "speciesvi `transfer_labels`, every cell labelled (`unassigned_threshold=None`)"),
    ("speciesvi_fresh", "transfer", "speciesvi `transfer_labels`, models trained in the run"),
    ("speciesvi", "data_level", "speciesvi data-level (`pp.homolog_neighbors`)"),
    ("original", "similarity", "scSpecies 0.1.4 similarity labels"),
    ("original", "data_level", "scSpecies 0.1.4 data-level labels"),
    ("knn_homologous", "knn", "kNN on homologous genes (k = 25)"),
    ("ingest", "ingest", "scanpy ingest"),
    ("celltypist", "best_match", "CellTypist (best match)"),
    ("celltypist", "majority_voting", "CellTypist (majority voting)"),
    ("celltypist", "prob_match", "CellTypist (prob match 0.5)"),
    ("scanvi", "scanvi", "scVI + scANVI, scArches query"),
]
DOC_MARK = ("<!-- suite:{name}:start (written by benchmarks/run.py) -->", "<!-- suite:{name}:end -->")


def write(text: str) -> None:
    """Progress messages of the runner."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def machine() -> dict:
    """The machine and software versions, for every page."""
    import torch

    import speciesvi

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "speciesvi": speciesvi.__version__,
        "scvi-tools": __import__("scvi").__version__,
        "cuda": bool(torch.cuda.is_available()),
    }


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the finite values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def fmt(values, digits: int = 3) -> str:
    """``mean ± sd`` of a list, ``n/a`` when empty."""
    m, s = mean_sd(values)
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def update_index(name: str, block: str) -> None:
    """Replace (or append) the generated block ``name`` in docs/benchmarks.md."""
    start, end = (m.format(name=name) for m in DOC_MARK)
    text = DOCS_INDEX.read_text()
    new = f"{start}\n\n{block.strip()}\n\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + new + rest.split(end, 1)[1]
    else:
        marker = "## Result pages"
        text = text.replace(marker, f"{new}\n\n{marker}") if marker in text else text + "\n" + new + "\n"
    DOCS_INDEX.write_text(text)


def write_page(name: str, text: str, payload: dict) -> None:
    """Results JSON + Markdown under benchmarks/results/, the page under docs/benchmarks/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    (RESULTS / f"{name}.md").write_text(text)
    (DOCS / f"{name}.md").write_text(text)


# ----------------------------------------------------------------------------------------------- Baron suite
def baron_data() -> dict[str, Path]:
    """Mouse and human Baron cells on the homologous genes (human genes renamed to their mouse symbols).

    The gene selection is that of ``bench_label_transfer.load_pair`` restricted to the one-to-one homologs present
    in both; the human file carries the donor batches only, its labels go to a separate truth file.
    """
    folder = SUITE / "baron" / "data"
    files = {
        "context": folder / "mouse_homologous.h5ad",
        "target": folder / "human_homologous.h5ad",
        "truth": folder / "human_truth.csv",
        "reference": folder / "mouse_labels.csv",
    }
    if all(f.is_file() for f in files.values()):
        return files
    from bench_label_transfer import load_pair

    folder.mkdir(parents=True, exist_ok=True)
    mouse, human = load_pair()  # translate_genes, then select_genes
    symbols = human.var["context_gene"].astype(object)
    keep = symbols.notna().to_numpy() & np.isin(symbols.astype(str), mouse.var_names)
    human = human[:, keep].copy()
    human.var_names = symbols[keep].astype(str).to_numpy()
    human = human[:, ~human.var_names.duplicated()].copy()
    mouse = mouse[:, human.var_names].copy()
    human.obs[[LABELS]].rename(columns={LABELS: "label"}).to_csv(files["truth"])
    mouse.obs[[LABELS]].rename(columns={LABELS: "label"}).to_csv(files["reference"])
    human.obs = human.obs[[BATCH]].copy()
    human.var = human.var[[]].copy()
    mouse.var = mouse.var[[]].copy()
    mouse.write_h5ad(files["context"])
    human.write_h5ad(files["target"])
    return files


def peer_python(method: str) -> str:
    """The interpreter of a peer, building its environment first when it has one."""
    _, env, setup = PEER_SCRIPTS[method]
    if env is None:
        return sys.executable
    if setup is not None:
        subprocess.run(["bash", str(setup)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(env / "bin" / "python")


def run_peer(method: str, seed: int, files: dict, epochs: int, accelerator: str) -> Path:
    """Run one peer for one seed in a fresh process unless its result is cached; return its folder."""
    out = SUITE / "baron" / method / f"seed{seed}"
    if (out / "result.json").is_file() and (out / "predictions.csv").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    script = PEERS / PEER_SCRIPTS[method][0]
    cmd = [peer_python(method), str(script), "--context", str(files["context"]), "--target", str(files["target"])]
    cmd += ["--out", str(out), "--seed", str(seed), "--epochs", str(epochs), "--accelerator", accelerator]
    if method == "speciesvi_fresh":
        cmd.append("--retrain")
    env = dict(os.environ)
    if PEER_SCRIPTS[method][1] is not None:
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
    env["MPLBACKEND"] = "Agg"
    write(f"[baron] {method} seed {seed}: running (log {out / 'run.log'})")
    start = time.perf_counter()
    with open(out / "run.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {proc.returncode}); see {out / 'run.log'}")
    write(f"[baron] {method} seed {seed}: done in {time.perf_counter() - start:.0f} s")
    return out


def original_folder(seed: int) -> Path:
    """Where the original's run of one seed is cached."""
    return SUITE / "original" / f"seed{seed}"


def original_done(folder: Path) -> bool:
    """Whether a finished run of the original with label transfer lies in ``folder``."""
    try:
        timings = json.loads((folder / "timings.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return timings.get("status") == "ok" and "transfer_labels_data" in timings.get("stages_s", {})


def run_original_seed(seed: int, epochs: int) -> None:
    """Run the original (context, target, label transfer) for one seed unless cached."""
    out = original_folder(seed)
    if original_done(out):
        return
    write(f"[baron] original seed {seed}: running (slow; log {out.parent / f'seed{seed}.log'})")
    run_original(
        out,
        seed=seed,
        stages="context,target,transfer",
        epochs_context=epochs,
        epochs_target=epochs,
        workdir=out.parent / f"work_seed{seed}",
        npy_dir=out.parent / f"npy_seed{seed}",
        log_path=out.parent / f"seed{seed}.log",
    )


def original_runs(seeds: list[int]) -> list[dict]:
    """Results of every finished run of the original: the suite's seeds (and the earlier extra run, only while
    some of them are missing: it was timed under a heavy load)."""
    folders = [original_folder(s) for s in seeds]
    if not all(original_done(folder) for folder in folders) and original_done(ORIGINAL_EXTRA):
        folders.append(ORIGINAL_EXTRA)
    runs = []
    for folder in folders:
        if not original_done(folder):
            continue
        timings = json.loads((folder / "timings.json").read_text())
        stages = timings["stages_s"]
        labels = pd.read_csv(folder / "labels.csv", index_col=0)
        runs.append(
            {
                "seed": timings["seed"],
                "folder": str(folder.relative_to(REPO)),
                "fit_s": stages.get("context_training"),
                "query_s": round(stages.get("preprocessing", 0.0) + stages.get("target_training", 0.0), 3),
                "predict_s": {
                    "similarity": stages.get("transfer_labels_data"),
                    "data_level": stages.get("transfer_labels_data"),
                },
                "peak_rss_mb": timings["peak_rss_mb_after"].get("transfer_labels_data", timings.get("peak_rss_mb")),
                "loadavg": {"start": timings.get("loadavg_start"), "end": timings.get("loadavg_end")},
                "labels": labels,
            }
        )
    return runs


def evaluate(truth: pd.Series, reference: pd.Series, labels: pd.Series, confidence: pd.Series | None) -> dict:
    """Balanced accuracies, per-type recall, acinar AUROC and Unassigned shares of one prediction."""
    from sklearn.metrics import roc_auc_score

    import speciesvi

    truth = truth.loc[labels.index].astype(str)
    predicted = labels.astype(str).to_numpy()
    _, bacc, recall = speciesvi.tl.evaluate_labels(truth, predicted, reference=reference, min_cells=MIN_CELLS)
    _, bacc_all, recall_all = speciesvi.tl.evaluate_labels(truth, predicted, reference=reference, min_cells=1)
    acinar = truth.to_numpy() == NOVEL
    shared = np.isin(truth.to_numpy(), recall.index)
    unassigned = predicted == UNASSIGNED
    auroc = None
    if confidence is not None and acinar.any():
        both = acinar | shared
        score = 1.0 - confidence.loc[labels.index].to_numpy(dtype=float)
        score = np.nan_to_num(score, nan=1.0)
        auroc = float(roc_auc_score(acinar[both], score[both]))
    return {
        "n_cells": int(len(labels)),
        "balanced_accuracy": float(bacc),
        "balanced_accuracy_all_shared": float(bacc_all),
        "n_types_all_shared": int(len(recall_all)),
        "recall": {k: float(v) for k, v in recall.items()},
        "recall_all_shared": {k: float(v) for k, v in recall_all.items()},
        "acinar_auroc": auroc,
        "acinar_unassigned": float(unassigned[acinar].mean()) if acinar.any() else None,
        "shared_unassigned": float(unassigned[shared].mean()),
    }


def data_level_seconds(run: dict) -> float | None:
    """Wall time of speciesvi's ``pp.homolog_neighbors`` in a suite run (older runs: query minus training)."""
    if run.get("homolog_neighbors_s") is not None:
        return run["homolog_neighbors_s"]
    if run.get("fit_from_cache"):
        recorded = json.loads((Path(run["fit_from_cache"]) / "train.json").read_text())
        return round(run["query_s"] - recorded["target_train_s"], 3)
    return None


def baron_suite(args: argparse.Namespace) -> dict:
    """Run (or load) every method and seed on the Baron pair; write the tables."""
    files = baron_data()
    truth = pd.read_csv(files["truth"], index_col=0)["label"]
    reference = pd.read_csv(files["reference"], index_col=0)["label"].astype(str)
    methods = [m for m in PEER_SCRIPTS if m in args.methods]

    def seeds_of(method: str) -> list[int]:
        return args.fresh_seeds if method == "speciesvi_fresh" else args.seeds

    if not args.no_run:
        for method in methods:
            for seed in seeds_of(method):
                run_peer(method, seed, files, args.epochs, args.accelerator)
    if "original" in args.methods and not (args.no_run_original or args.no_run):
        for seed in args.seeds:
            run_original_seed(seed, args.epochs)
    runs: dict[str, list[dict]] = {}
    missing = []
    for method in methods:
        for seed in seeds_of(method):
            folder = SUITE / "baron" / method / f"seed{seed}"
            if not (folder / "result.json").is_file():
                missing.append(f"{method} seed {seed}")
                continue
            result = json.loads((folder / "result.json").read_text())
            predictions = pd.read_csv(folder / "predictions.csv", index_col=0)
            result["predictions"] = predictions
            runs.setdefault(method, []).append(result)
    if "original" in args.methods:
        missing += [f"original seed {s}" for s in args.seeds if not original_done(original_folder(s))]
        for run in original_runs(args.seeds):
            labels = run.pop("labels")
            # cells of the types the original drops (it crashes on them) count as not labelled
            run["predictions"] = pd.DataFrame(
                {"label:similarity": labels["pred_similarity"], "label:data_level": labels["pred_data_level"]}
            ).reindex(truth.index, fill_value=DROPPED)
            runs.setdefault("original", []).append(run)
    rows = []
    for method, variant, name in ROWS:
        entries = []
        for run in runs.get(method, []):
            frame = run["predictions"]
            if f"label:{variant}" not in frame:
                continue
            conf = frame.get(f"confidence:{variant}")
            metrics = evaluate(truth, reference, frame[f"label:{variant}"], conf)
            fit_s, query_s = run.get("fit_s"), run.get("query_s")
            if method == "speciesvi" and variant == "data_level":  # needs pp.homolog_neighbors only
                fit_s, query_s = 0.0, data_level_seconds(run)
            entries.append(
                {
                    "seed": run["seed"],
                    **metrics,
                    "fit_s": fit_s,
                    "query_s": query_s,
                    "predict_s": (run.get("predict_s") or {}).get(variant),
                    "peak_rss_mb": run.get("peak_rss_mb"),
                    "loadavg": run.get("loadavg"),
                    "fit_from_cache": run.get("fit_from_cache"),
                }
            )
        if entries:
            rows.append({"method": method, "variant": variant, "name": name, "runs": entries})
    payload = {
        "suite": "baron",
        "machine": machine(),
        "seeds": args.seeds,
        "epochs": args.epochs,
        "accelerator": args.accelerator,
        "eval_types": sorted(rows[0]["runs"][0]["recall"]) if rows else [],
        "rows": rows,
        "missing": missing,
        "versions": {m: runs[m][0].get("versions") for m in runs if runs[m][0].get("versions")},
        "params": {m: runs[m][0].get("params") for m in runs if runs[m][0].get("params")},
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    text, block = baron_markdown(payload)
    write_page("suite_baron", text, payload)
    update_index("baron", block)
    write(text)
    return payload


def _row(rows: list[dict], method: str, variant: str) -> dict | None:
    return next((r for r in rows if r["method"] == method and r["variant"] == variant), None)


def _values(row: dict, key: str) -> list:
    return [run[key] for run in row["runs"] if run.get(key) is not None]


def baron_headline(payload: dict) -> list[str]:
    """The ratios of speciesvi against the original (accuracy, time, memory)."""
    rows = payload["rows"]
    ours, theirs = _row(rows, "speciesvi", "transfer"), _row(rows, "original", "similarity")
    if ours is None or theirs is None:
        return ["The original has no finished run yet; no ratios."]

    def total(row: dict) -> list[float]:
        return [r["fit_s"] + r["query_s"] + r["predict_s"] for r in row["runs"] if r.get("fit_s") is not None]

    acc_ours = mean_sd(_values(ours, "balanced_accuracy"))[0]
    acc_theirs = mean_sd(_values(theirs, "balanced_accuracy"))[0]
    votes = _row(rows, "speciesvi", "data_level")
    timing = _row(rows, "speciesvi_fresh", "transfer") or ours
    which = "models trained in the run" if timing is not ours else "cached models, recorded training times"
    t_ours, t_theirs = mean_sd(total(timing))[0], mean_sd(total(theirs))[0]
    p_ours, p_theirs = mean_sd(_values(timing, "predict_s"))[0], mean_sd(_values(theirs, "predict_s"))[0]
    m_ours, m_theirs = mean_sd(_values(timing, "peak_rss_mb"))[0], mean_sd(_values(theirs, "peak_rss_mb"))[0]
    every = _row(rows, "speciesvi", "transfer_all")
    lines = [
        f"- Balanced accuracy (7 types): speciesvi {acc_ours:.3f} vs the original's similarity labels "
        f"{acc_theirs:.3f} (difference {acc_ours - acc_theirs:+.3f}; {len(ours['runs'])} vs "
        f"{len(theirs['runs'])} seeds)"
        + (
            f"; with every cell labelled, as the original labels them, speciesvi "
            f"{mean_sd(_values(every, 'balanced_accuracy'))[0]:.3f}."
            if every is not None
            else "."
        ),
        f"- Label transfer (`transfer_labels` vs `transfer_labels_data`): {p_ours:.1f} s vs {p_theirs:.1f} s, "
        f"{p_theirs / p_ours:.0f}x faster. Whole workflow (both trainings + transfer; speciesvi: {which}): "
        f"{t_ours:.0f} s vs {t_theirs:.0f} s, {t_theirs / t_ours:.1f}x faster.",
        f"- Peak memory (process high-water mark, speciesvi: {which}): {m_ours:.0f} MB vs {m_theirs:.0f} MB "
        f"({m_theirs / m_ours:.1f}x less).",
    ]
    if votes is not None:
        lines.append(
            f"- Data-level labels alone: speciesvi {mean_sd(_values(votes, 'balanced_accuracy'))[0]:.3f}, the original "
            f"{mean_sd(_values(_row(rows, 'original', 'data_level'), 'balanced_accuracy'))[0]:.3f}."
        )
    return lines


def baron_markdown(payload: dict) -> tuple[str, str]:
    """The Baron page and the summary block for docs/benchmarks.md."""
    rows, m = payload["rows"], payload["machine"]
    seeds = " ".join(map(str, payload["seeds"]))
    command = f"python benchmarks/run.py --suite baron --seeds {seeds} --epochs {payload['epochs']}"
    pp_type = "pancreatic PP cell"
    header = (
        "| method | seeds | balanced accuracy (7 types) | balanced accuracy (all shared) | PP recall | acinar AUROC "
        "| acinar Unassigned | shared Unassigned | fit (s) | query (s) | predict (s) | peak RSS (MB) |"
    )
    table = [header, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        runs = row["runs"]
        table.append(
            f"| {row['name']} | {', '.join(str(r['seed']) for r in runs)} "
            f"| {fmt(_values(row, 'balanced_accuracy'))} | {fmt(_values(row, 'balanced_accuracy_all_shared'))} "
            f"| {fmt([r['recall'].get(pp_type) for r in runs if pp_type in r['recall']])} "
            f"| {fmt(_values(row, 'acinar_auroc'))} | {fmt(_values(row, 'acinar_unassigned'))} "
            f"| {fmt(_values(row, 'shared_unassigned'))} | {fmt(_values(row, 'fit_s'), 1)} "
            f"| {fmt(_values(row, 'query_s'), 1)} | {fmt(_values(row, 'predict_s'), 1)} "
            f"| {fmt(_values(row, 'peak_rss_mb'), 0)} |"
        )
    types = payload["eval_types"]
    recall = ["| method | " + " | ".join(types) + " |", "| --- | " + " | ".join("---" for _ in types) + " |"]
    for row in rows:
        recall.append(
            f"| {row['name']} | " + " | ".join(fmt([r["recall"].get(t) for r in row["runs"]], 2) for t in types) + " |"
        )
    loads = ["| method | seed | load average (1 min) around fit / query / predict |", "| --- | --- | --- |"]
    for row in rows:
        if row["variant"] not in ("transfer", "similarity", "knn", "ingest", "best_match", "scanvi"):
            continue
        for r in row["runs"]:
            la = r.get("loadavg") or {}
            text = "; ".join(f"{k}: {v}" for k, v in la.items())
            loads.append(f"| {row['name']} | {r['seed']} | {text} |")
    headline = baron_headline(payload)
    cached = any(r.get("fit_from_cache") for row in rows for r in row["runs"])
    lines = [
        "# Suite: Baron mouse -> human against the original and the usual alternatives",
        "",
        f"`{command}` on {m['cpu']} ({m['cpu_count']} cores, possibly shared with other jobs: see the load averages, torch {m['torch']} with "
        f"{m['torch_threads']} threads, speciesvi {m['speciesvi']}, scvi-tools {m['scvi-tools']}; accelerator: "
        f"{payload['accelerator']}). Written {payload['written']}. Rerunning the command recomputes only what is "
        "missing from `benchmarks/.work/suite/`; on a GPU machine add `--accelerator gpu`.",
        "",
        "## Headline",
        "",
        *headline,
        "",
        "## Label transfer",
        "",
        *table,
        "",
        "Mean ± sd over seeds. Balanced accuracy: mean recall over the types with >= 20 cells in both species "
        f"({', '.join(types)}), or over all types present in both species; 'Unassigned' counts as wrong. Acinar "
        "cells are in the human data only: AUROC of (1 - confidence) for acinar against shared-type cells, and the "
        "share of acinar / shared-type cells left 'Unassigned' (n/a: the method has no confidence). Times: fit = "
        "context/reference training (reusable for any target); query = target-specific work (speciesvi: "
        "`pp.homolog_neighbors` + TargetVI training; the original: preprocessing + `train_target`; scANVI: "
        "`load_query_data` + query training); predict = labelling the target cells. Peak RSS: high-water mark "
        "(`VmHWM`) of the method's own process (for the original, its runner's `ru_maxrss` after the transfer).",
        "",
        "### Per-type recall",
        "",
        *recall,
        "",
        "### Load average of the shared machine",
        "",
        *loads,
        "",
        "## Protocol",
        "",
        "- Data: all Baron cells (mouse 1,886, human 2,142) with the gene selection of "
        "`benchmarks/bench_label_transfer.py` (`speciesvi.pp.select_genes`: per species its 4,000 most variable "
        "genes plus the homologs of the other species' ones). speciesvi uses all these genes; the peers get the one-to-one "
        "homologous genes among them (human genes renamed to their mouse symbols); the original selects its own "
        "4,000 variable genes per species and drops cell types with <= 3 cells in every donor (it crashes on them), "
        "so it is scored on the cells it keeps.",
        f"- Epochs: {payload['epochs']} for every neural model: speciesvi ContextVI and TargetVI, the original's "
        "context and target models, and scVI, scANVI and the scArches query model.",
        "- No hyper-parameter was chosen by looking at human labels. Every peer runs with its package defaults or "
        "the settings of its own tutorial (kNN: k = 25, the voters of scSpecies; ingest: scanpy defaults; CellTypist: "
        "`celltypist.train`/`annotate` defaults, p = 0.5 for prob match; scANVI: the scArches architecture of the "
        "scvi-tools reference-mapping tutorial). speciesvi runs with its defaults, fixed on the mouse side and on "
        "the embedded demo pair before this suite. The human file given to the peers holds no labels; the scorer "
        "reads them only after the predictions are written.",
        "- Each method runs in a fresh process (CellTypist and the original in their own virtual environments).",
    ]
    if payload.get("missing"):
        lines.append(
            "- Not in the table (not finished when the page was written; the same command computes them): "
            + ", ".join(payload["missing"])
            + "."
        )
    if cached:
        lines.append(
            "- speciesvi's models are the cached 40 + 40-epoch models of `benchmarks/bench_label_transfer.py`; their "
            "training times were recorded when they were trained (under a different load) and their peak RSS is "
            "that of loading them plus `pp.homolog_neighbors` and `transfer_labels`, not of training."
        )
    text = "\n".join(lines) + "\n"
    block = "\n".join(
        [
            "## Suite: against the original and the usual alternatives",
            "",
            f"Generated by `{command}`; details on [the Baron suite page](benchmarks/suite_baron.md).",
            "",
            *headline,
            "",
            *table,
        ]
    )
    return text, block


# --------------------------------------------------------------------------------------------- scaling suite
def scaling_step(step: str, size: int, seed: int, accelerator: str, timeout: float | None, run: bool = True) -> dict:
    """Run one scaling step in a fresh process (``benchmarks/_scaling_step.py``), cached per size and step."""
    out = SUITE / "scaling" / f"n{size}" / f"{step}.json"
    if out.is_file():
        return json.loads(out.read_text())
    if not run:
        return {"step": step, "cells": size, "error": "not run"}
    out.parent.mkdir(parents=True, exist_ok=True)
    if step != "prepare" and not (out.parent / "data" / "human.h5ad").is_file():
        scaling_step("prepare", size, seed, accelerator, None)
    cmd = [sys.executable, str(BENCH / "_scaling_step.py"), step, "--cells", str(size), "--seed", str(seed)]
    cmd += ["--accelerator", accelerator, "--out", str(out)]
    write(f"[scaling] {step} at {size:,} cells")
    with open(out.with_suffix(".log"), "w") as log:
        try:
            proc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), timeout=timeout, check=False
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0 or not out.is_file():
        return {"step": step, "cells": size, "error": f"exit {rc}; see {out.with_suffix('.log')}"}
    return json.loads(out.read_text())


def growth_exponent(sizes: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(size)."""
    pairs = [(s, v) for s, v in zip(sizes, values, strict=True) if v and v > 0]
    if len(pairs) < 2:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


SCALING_STEPS = ["homolog_neighbors", "context_epoch", "target_epoch", "transfer_labels", "homolog_lfc"]


def original_scaling(size: int, seed: int, timeout: float | None) -> dict:
    """The original at ``size`` cells: one context and one target epoch, then its label transfer."""
    out = SUITE / "scaling" / f"n{size}" / "original"
    if not original_done(out):
        data = SUITE / "scaling" / f"n{size}" / "data"
        if not (data / "mouse.h5ad").is_file():
            scaling_step("prepare", size, seed, "cpu", None)  # writes the tiled data
        try:
            run_original(
                out,
                seed=seed,
                stages="context,target,transfer",
                epochs_context=1,
                epochs_target=1,
                context=data / "mouse.h5ad",
                target=data / "human.h5ad",
                workdir=out.parent / "original_work",
                npy_dir=out.parent / "original_npy",
                log_path=out.parent / "original.log",
                timeout=timeout,
            )
        except Exception as exc:  # noqa: BLE001 - recorded on the page
            return {"cells": size, "error": str(exc).splitlines()[0]}
    timings = json.loads((out / "timings.json").read_text())
    stages = timings["stages_s"]
    return {
        "cells": size,
        "context_epoch_s": stages.get("context_training"),
        "target_epoch_s": stages.get("target_training"),
        "transfer_labels_s": stages.get("transfer_labels_data"),
        "peak_rss_mb": timings.get("peak_rss_mb"),
        "loadavg": [timings.get("loadavg_start"), timings.get("loadavg_end")],
    }


def scaling_suite(args: argparse.Namespace) -> dict:
    """speciesvi (and the original where it runs) against the number of cells."""
    import speciesvi

    has_lfc = hasattr(speciesvi.TargetVI, "homolog_lfc")
    steps = [s for s in SCALING_STEPS if s != "homolog_lfc" or has_lfc]
    results = {
        size: {step: scaling_step(step, size, args.seeds[0], args.accelerator, None, not args.no_run) for step in steps}
        for size in args.sizes
    }
    original = [original_scaling(size, args.seeds[0], args.original_timeout) for size in args.original_sizes]
    baron_original = [r for r in original_runs([0]) if r.get("fit_s")]
    measured_100k = None
    scale_file = RESULTS / "label_transfer_scale.json"
    if scale_file.is_file():
        measured_100k = json.loads(scale_file.read_text())
    exponents = {}
    for step in steps:
        sizes = [s for s in args.sizes if "error" not in results[s][step]]
        cpu = [results[s][step].get("cpu_seconds") for s in sizes]
        exponents[step] = {
            "time": growth_exponent(sizes, [results[s][step]["seconds"] for s in sizes]),
            "cpu_time": growth_exponent(sizes, cpu) if all(c is not None for c in cpu) else None,
            "memory": growth_exponent(sizes, [results[s][step]["peak_rss_mb"] for s in sizes]),
        }
    payload = {
        "suite": "scaling",
        "machine": machine(),
        "sizes": args.sizes,
        "seed": args.seeds[0],
        "accelerator": args.accelerator,
        "homolog_lfc": has_lfc,
        "speciesvi": {str(k): v for k, v in results.items()},
        "exponents": exponents,
        "original": original,
        "original_baron_full": [
            {
                "seed": r["seed"],
                "cells": "1,886 x 2,142",
                "context_epoch_s": r["fit_s"] / 40 if r["fit_s"] else None,
                "transfer_labels_s": r["predict_s"]["similarity"],
                "peak_rss_mb": r["peak_rss_mb"],
            }
            for r in baron_original
        ],
        "label_transfer_scale": measured_100k,
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    plot_scaling(payload, steps)
    text, block = scaling_markdown(payload, steps)
    write_page("suite_scaling", text, payload)
    update_index("scaling", block)
    write(text)
    return payload


STEP_NAMES = {
    "homolog_neighbors": "`pp.homolog_neighbors`",
    "context_epoch": "ContextVI, one epoch",
    "target_epoch": "TargetVI, one epoch",
    "transfer_labels": "`TargetVI.transfer_labels`",
    "homolog_lfc": "`TargetVI.homolog_lfc`",
}


def plot_scaling(payload: dict, steps: list[str]) -> None:
    """Log-log plot of wall time and peak RSS against the number of cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for step in steps:
        pts = [
            (int(n), r[step]["seconds"], r[step]["peak_rss_mb"])
            for n, r in payload["speciesvi"].items()
            if "error" not in r[step]
        ]
        if not pts:
            continue
        n, sec, mem = zip(*sorted(pts), strict=True)
        exp = payload["exponents"][step]
        label_t = f"{STEP_NAMES[step].strip('`')} (slope {exp['time']:.2f})" if exp["time"] else STEP_NAMES[step]
        label_m = f"{STEP_NAMES[step].strip('`')} (slope {exp['memory']:.2f})" if exp["memory"] else STEP_NAMES[step]
        axes[0].plot(n, sec, "o-", label=label_t)
        axes[1].plot(n, mem, "o-", label=label_m)
    orig = [o for o in payload["original"] if "error" not in o]
    if orig:
        n = [o["cells"] for o in orig]
        axes[0].plot(n, [o["transfer_labels_s"] for o in orig], "s--", color="k", label="original transfer_labels_data")
        axes[1].plot(n, [o["peak_rss_mb"] for o in orig], "s--", color="k", label="original (whole run)")
    for ax, ylabel in zip(axes, ["wall time (s)", "peak RSS (MB)"], strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells per species")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    DOCS.mkdir(parents=True, exist_ok=True)
    fig.savefig(DOCS / "suite_scaling.png", dpi=110)
    plt.close(fig)


def scaling_markdown(payload: dict, steps: list[str]) -> tuple[str, str]:
    """The scaling page and its summary block."""
    m = payload["machine"]
    sizes = payload["sizes"]
    command = f"python benchmarks/run.py --suite scaling --sizes {' '.join(map(str, sizes))}"
    if payload["original"]:
        command += " --original-sizes " + " ".join(str(o["cells"]) for o in payload["original"])
    table = ["| step | " + " | ".join(f"{n:,} cells: s / MB" for n in sizes) + " | exponent time | exponent memory |"]
    table.append("| --- | " + " | ".join("---" for _ in sizes) + " | --- | --- |")
    for step in steps:
        cells = []
        for n in sizes:
            r = payload["speciesvi"][str(n)][step]
            cpu = f" (CPU {r['cpu_seconds']:.1f})" if r.get("cpu_seconds") is not None else ""
            cells.append(
                ("not run" if r["error"] == "not run" else "failed")
                if "error" in r
                else f"{r['seconds']:.1f}{cpu} / {r['peak_rss_mb']:.0f}"
            )
        exp = payload["exponents"][step]
        e_t = f"{exp['time']:.2f}" if exp["time"] is not None else "n/a"
        e_m = f"{exp['memory']:.2f}" if exp["memory"] is not None else "n/a"
        if exp.get("cpu_time") is not None:
            e_t += f" (CPU {exp['cpu_time']:.2f})"
        table.append(f"| {STEP_NAMES[step]} | " + " | ".join(cells) + f" | {e_t} | {e_m} |")
    loads = [
        "| step | " + " | ".join(f"{n:,}" for n in sizes) + " |",
        "| --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for step in steps:
        loads.append(
            f"| {STEP_NAMES[step]} | "
            + " | ".join(str(payload["speciesvi"][str(n)][step].get("loadavg", "")) for n in sizes)
            + " |"
        )
    lines = [
        "# Suite: scaling with the number of cells",
        "",
        f"`{command}` on {m['cpu']} ({m['cpu_count']} cores, possibly shared with other jobs: see the load averages; torch {m['torch']}, "
        f"{m['torch_threads']} threads; speciesvi {m['speciesvi']}; accelerator: {payload['accelerator']}). Written "
        f"{payload['written']}. On a GPU machine add `--accelerator gpu` (CUDA available for this page: {m['cuda']}).",
        "",
        "Data: the full Baron cells of both species tiled to n target x n context cells, every copy a binomial "
        "thinning of its counts (p = 0.9), as in `benchmarks/bench_label_transfer_scale.py`. Every step runs in a "
        "fresh process that loads the tiled data (and, for the epochs and the transfer, the seed-0 models of "
        "`benchmarks/bench_label_transfer.py`); wall time of the step itself, peak RSS (`VmHWM`) of the whole "
        "process including the data; CPU time of the step (all threads) in parentheses where recorded, which on a "
        "shared machine is the less noisy figure. Growth exponent: least-squares slope of "
        "log(value) against log(cells).",
        "",
        "![Wall time and peak memory against cells (log-log)](suite_scaling.png)",
        "",
        *table,
        "",
    ]
    if not payload["homolog_lfc"]:
        lines += ["`TargetVI.homolog_lfc` does not exist in this speciesvi yet, so its row is skipped.", ""]
    lines += [
        "On a shared machine the wall times, and so the exponents, mix the growth of the work with the share of "
        "the CPU each process got (see the load averages below); the CPU times and a quiet or GPU machine give "
        "the cleaner figures.",
        "",
        "Load average (1 min) at the start and end of each step:",
        "",
        *loads,
        "",
    ]
    lines += ["## The original", ""]
    orig_rows = ["| cells | one context epoch (s) | one target epoch (s) | label transfer (s) | peak RSS (MB) |"]
    orig_rows.append("| --- | --- | --- | --- | --- |")
    for o in payload["original"]:
        if "error" in o:
            orig_rows.append(f"| {o['cells']:,} | failed: {o['error']} | | | |")
        else:
            orig_rows.append(
                f"| {o['cells']:,} | {o['context_epoch_s']:.1f} | {o['target_epoch_s']:.1f} "
                f"| {o['transfer_labels_s']:.1f} | {o['peak_rss_mb']:.0f} |"
            )
    for o in payload["original_baron_full"]:
        orig_rows.append(
            f"| {o['cells']} (Baron suite, seed {o['seed']}; epoch = 40-epoch training / 40) "
            f"| {o['context_epoch_s']:.1f} | | {o['transfer_labels_s']:.1f} | {o['peak_rss_mb']:.0f} |"
        )
    lines += orig_rows + [""]
    if not payload["original"]:
        lines += [
            "The original was not run on tiled data here: on the Baron pair (about 2,000 cells per species) its "
            "label transfer alone takes the time in the table above, which grows with the number of target cells "
            "times the candidates it decodes; `--original-sizes 10000` runs it at 10,000 cells.",
            "",
        ]
    scale = payload.get("label_transfer_scale")
    if scale:
        lines += [
            f"`benchmarks/bench_label_transfer_scale.py` (separate run, {scale['n_target']:,} x {scale['n_context']:,} "
            f"cells): `pp.homolog_neighbors` {scale['homolog_neighbors_s']} s, `transfer_labels` "
            f"{scale['transfer_labels_s']} s, peak RSS {scale['peak_rss_mb']} MB (load average {scale['loadavg']}).",
            "",
        ]
    text = "\n".join(lines)
    block = "\n".join(
        [
            "## Suite: scaling",
            "",
            f"Generated by `{command}`; details on [the scaling page](benchmarks/suite_scaling.md).",
            "",
            "![Wall time and peak memory against cells (log-log)](benchmarks/suite_scaling.png)",
            "",
            *table,
        ]
    )
    return text, block


# ----------------------------------------------------------------------------------------------- FLOP suite
def flops_suite(args: argparse.Namespace) -> dict:
    """Similarity kernel FLOP/s against dense matmul FLOP/s, in a fresh process."""
    out = SUITE / "flops.json"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(BENCH / "_kernel_flops.py"), "--out", str(out), "--seed", str(args.seeds[0])]
        with open(out.with_suffix(".log"), "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), check=True)
    payload = {"suite": "flops", "machine": machine(), **json.loads(out.read_text())}
    text, block = flops_markdown(payload)
    write_page("suite_flops", text, payload)
    update_index("flops", block)
    write(text)
    return payload


def flops_markdown(payload: dict) -> tuple[str, str]:
    """The FLOP/s page and its summary block."""
    m, mm = payload["machine"], payload["matmul"]
    rows = ["| kernel mode | pairs | time (s) | counted GFLOP | GFLOP/s | share of matmul peak |"]
    rows.append("| --- | --- | --- | --- | --- | --- |")
    for k in payload["kernel"]:
        rows.append(
            f"| {k['mode']} | {k['pairs']:,} | {k['seconds']:.2f} | {k['gflop']:.1f} | {k['gflops']:.2f} "
            f"| {100 * k['gflops'] / mm['gflops']:.1f} % |"
        )
    naive = payload["naive"]
    best = min(payload["kernel"], key=lambda k: k["seconds"])
    bound = naive["gflop"] / mm["gflops"]
    lines = [
        "# Suite: physical limit of the similarity kernel",
        "",
        f"`python benchmarks/run.py --suite flops` on {m['cpu']} ({m['cpu_count']} cores, possibly shared with other jobs: see the load averages; "
        f"torch {m['torch']}, {payload['threads']} threads; load average {payload['loadavg']}).",
        "",
        f"Dense float32 matmul ({mm['n']} x {mm['n']}, best of {mm['repeats']}): **{mm['gflops']:.1f} GFLOP/s** on "
        "this machine; that is the reference peak.",
        "",
        f"Workload: the likelihood of every human Baron cell ({payload['n_cells']:,} cells) under each of its "
        f"{payload['k']} latent candidates, `candidate_log_likelihood` with the seed-0 models of "
        f"`benchmarks/bench_label_transfer.py` ({payload['n_genes']:,} target genes, {payload['likelihood']}; "
        f"{payload['n_unique']:,} distinct (candidate, batch) codes decoded).",
        "",
        *rows,
        "",
        "Counted FLOPs (one per add, multiply or compare; a tabulated softplus or sigmoid as "
        f"{payload['op_counts']['softplus']} FLOPs): decoding = 2 x multiply-adds of the decoder layers per decoded "
        f"code; dense part = {payload['op_counts']['dense']} FLOPs per gene and evaluation; sparse part = "
        f"{payload['op_counts']['sparse']} FLOPs per non-zero count and pair. 'exact' evaluates the dense part for "
        f"every pair, 'grid' once per code on {payload['n_grid']} log-library points (plus slopes) and interpolates.",
        "",
        f"A per-pair evaluation as the original does it (decode every pair, dense likelihood over all genes) counts "
        f"{naive['gflop']:.0f} GFLOP: at this machine's matmul peak that would take at least {bound:.1f} s, against "
        f"{best['seconds']:.2f} s measured for the fastest mode ({bound / best['seconds']:.1f}x below that bound, "
        "because the kernel does not do that work: it decodes each code once and evaluates only the non-zero counts "
        "per pair).",
        "",
    ]
    text = "\n".join(lines)
    block = "\n".join(
        [
            "## Suite: physical limit of the similarity kernel",
            "",
            f"Generated by `python benchmarks/run.py --suite flops`; details on "
            "[the FLOP page](benchmarks/suite_flops.md). Dense matmul on this machine: "
            f"{mm['gflops']:.1f} GFLOP/s.",
            "",
            *rows,
        ]
    )
    return text, block


def main(argv=None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["baron", "scaling", "flops", "robustness", "all"], required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40, help="epochs of every neural model (Baron, robustness)")
    parser.add_argument("--accelerator", default="cpu", help="'cpu', 'gpu' or 'auto' for the neural methods")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[*PEER_SCRIPTS, "original"],
        help="Baron suite methods: " + ", ".join([*PEER_SCRIPTS, "original"]) + " (robustness: a subset of "
        "speciesvi, knn_homologous, ingest, celltypist, scanvi)",
    )
    parser.add_argument(
        "--directions",
        nargs="+",
        choices=["mouse_to_human", "human_to_mouse"],
        default=["mouse_to_human", "human_to_mouse"],
        help="robustness: context -> target species",
    )
    parser.add_argument("--genes", nargs="+", choices=["select", "all"], default=["select", "all"], help="robustness")
    parser.add_argument("--subsample", type=int, default=None, help=argparse.SUPPRESS)  # robustness smoke tests
    parser.add_argument("--no-self", action="store_true", help="robustness: run no self-projection (still tabulated)")
    parser.add_argument(
        "--fresh-seeds",
        type=int,
        nargs="*",
        default=[0],
        help="seeds for which speciesvi is also trained inside the run (measured training time and memory)",
    )
    parser.add_argument("--no-run", action="store_true", help="only tabulate the finished runs (baron, scaling)")
    parser.add_argument("--no-run-original", action="store_true", help="use only finished runs of the original")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000], help="scaling: cells per species")
    parser.add_argument("--original-sizes", type=int, nargs="*", default=[], help="scaling: sizes for the original")
    parser.add_argument("--original-timeout", type=float, default=3600.0, help="scaling: seconds per original run")
    args = parser.parse_args(argv)
    suites = ["baron", "scaling", "flops"] if args.suite == "all" else [args.suite]
    for suite in suites:
        if suite == "robustness":
            from benchmarks.robustness import robustness_suite

            robustness_suite(args)
            continue
        {"baron": baron_suite, "scaling": scaling_suite, "flops": flops_suite}[suite](args)


if __name__ == "__main__":
    main()
