"""Homolog log2 fold changes on the full Baron pair (mouse -> human), speciesvi beside the original.

    python benchmarks/bench_lfc.py [--seeds 0] [--n-samples 50000] [--threads N] [--original run|cached] [--report-only]

Models: the 40 + 40-epoch ContextVI/TargetVI of ``benchmarks/bench_label_transfer.py`` (cached in
benchmarks/.work/label_transfer/seed{N}_e40; trained there if missing). Target labels are the transferred
ones (``transfer_labels`` with default settings, the default of ``homolog_lfc``); the run with the known
human labels is reported beside it.

Measured per seed and cell type with >= 20 cells in both species (known labels):

* agreement with the data: Spearman correlation between ``lfc`` and the pseudo-bulk lfc
  (:func:`speciesvi.tl.pseudobulk_lfc`: mean of library-normalised counts per type and species, renormalised
  over the homologous genes) over the gene pairs expressed in either species (pseudo-bulk > 1e-4);
* calibration: share of gene pairs with ``p > 0.9`` on the real comparison and on the gene-permuted null,
  and, for reference, what the data say about random pairings (share of randomly re-paired genes whose
  pseudo-bulk expression differs more than two-fold);
* wall time of ``homolog_lfc`` with ``n_samples`` draws (load averages beside it).

The original (scSpecies 0.1.4, ``compute_logfold_change``) is read from its finished run in
benchmarks/results/original_seed369963 (its own 4,000 HVGs per species, 1,506 homologous genes, known human
labels) and scored against the same pseudo-bulk on its own gene pairs and on the pairs both share. With
``--original run`` its ``compute_logfold_change`` is timed again here with the same ``n_samples``, on its saved
40 + 40-epoch models (loaded in its own environment, benchmarks/_original.py), and its new tables replace the
stored ones. Writes benchmarks/results/lfc.{json,md} and docs/benchmarks/lfc.md.
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
import torch

import speciesvi
from speciesvi.module._lfc import abundance_bins, matched_permutation
from speciesvi.module._precision import fast_matmul_dtype

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
from benchmarks._original import DEFAULT_ORTHOLOGS, SHARED_DATA, WORK_DIR, ensure_env  # noqa: E402
from benchmarks.bench_label_transfer import LABELS, train_models  # noqa: E402

ORIGINAL_DIR = BENCH / "results" / "original_seed369963"
ORIGINAL_WORKDIR = WORK_DIR / "scspecies_original_seed369963"
ORIGINAL_RERUN = WORK_DIR / "lfc_original"
MIN_CELLS = 20
MIN_EXPRESSION = 1e-4

# Driven in the original's own environment: rebuild its inputs exactly as benchmarks/peers/run_scspecies.py
# does, load the models that run saved, encode both species and time compute_logfold_change alone.
ORIGINAL_DRIVER = r"""
import importlib.util, json, os, sys, time, contextlib
from pathlib import Path
import anndata as ad, torch
spec = importlib.util.spec_from_file_location("runner", sys.argv[1]); runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
from scspecies.models import scSpecies
from scspecies.preprocessing import create_mdata, set_random_seed
context_path, target_path, orth, workdir, out, samples, threads = sys.argv[2:9]
torch.set_num_threads(int(threads)) if int(threads) > 0 else None
os.chdir(workdir); set_random_seed(369963)
human2mouse, info = runner.load_one_to_one(Path(orth)); runner.install_translation_patch(create_mdata, human2mouse, info)
lk, bk = "cell_ontology_class", "donor"
context, _ = runner.drop_rare_types(ad.read_h5ad(context_path), lk, bk, "context")
target, _ = runner.drop_rare_types(ad.read_h5ad(target_path), lk, bk, "target")
with contextlib.redirect_stdout(sys.stderr):
    builder = create_mdata(context, batch_key=bk, cell_key=lk, dataset_name="mouse", NCBI_Taxon_ID=10090, n_top_genes=4000)
    builder.setup_target_adata(target, batch_key=bk, cell_key=lk, dataset_name="human", NCBI_Taxon_ID=9606, n_top_genes=4000)
    model = scSpecies("cpu", builder.return_mdata(), str(Path(workdir) / "model"), random_seed=369963,
                      context_key="mouse", target_key="human")
    model.load("both")
    model.get_representation("context", save_intermediate=True, save_libsize=True)
    model.get_representation("target", save_libsize=True)
    load_start = list(os.getloadavg()); start, cpu_start = time.perf_counter(), time.process_time()
    lfc = model.compute_logfold_change(samples=int(samples))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
out = Path(out); out.mkdir(parents=True, exist_ok=True)
files = {}
for key, frame in lfc.items():
    if hasattr(frame, "to_csv"):
        files[key] = runner.safe_filename(key) + ".csv"; frame.to_csv(out / files[key], index_label="gene")
json.dump({"compute_logfold_change_s": round(seconds, 2), "compute_logfold_change_cpu_s": round(cpu_seconds, 2), "n_samples": int(samples), "torch_threads": torch.get_num_threads(),
           "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()), "files": files}, open(out / "timing.json", "w"), indent=2)
"""


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def one_to_one() -> dict[str, str]:
    """Human -> mouse symbols of the unambiguous one-to-one rows (the original's translation here)."""
    table = pd.read_csv(DEFAULT_ORTHOLOGS)
    rows = table[table["human.homology.type"] == "ortholog_one2one"][["human.gene.name", "gene.name"]]
    rows = rows.dropna().drop_duplicates()
    ambiguous = rows["human.gene.name"].duplicated(keep=False) | rows["gene.name"].duplicated(keep=False)
    return dict(zip(rows.loc[~ambiguous, "human.gene.name"], rows.loc[~ambiguous, "gene.name"], strict=True))


def shared_types(human: pd.Series, mouse: pd.Series) -> list[str]:
    n_h, n_m = human.astype(str).value_counts(), mouse.astype(str).value_counts()
    return sorted(set(n_h.index[n_h >= MIN_CELLS]) & set(n_m.index[n_m >= MIN_CELLS]))


def calibration(table: pd.DataFrame, types: list[str], p_col: str = "p", null_col: str = "p_null") -> dict:
    rows = {}
    for cell_type in types:
        group = table[table["cell_type"].astype(str) == cell_type]
        rows[cell_type] = {
            "real_p_gt_0.9": round(float((group[p_col] > 0.9).mean()), 4),
            "null_p_gt_0.9": round(float((group[null_col] > 0.9).mean()), 4),
        }
    return rows


def random_pairing_differs(bulk: pd.DataFrame, types: list[str], seed: int = 0) -> dict:
    """Share of randomly re-paired genes whose pseudo-bulk expression differs more than two-fold (and of real pairs)."""
    rng = np.random.default_rng(seed)
    out = {}
    for cell_type in types:
        group = bulk[bulk["cell_type"].astype(str) == cell_type]
        t, c = group["expression_target"].to_numpy(), group["expression_context"].to_numpy()
        real = np.abs(np.log2(t + 1e-6) - np.log2(c + 1e-6)) > 1
        shuffled = np.abs(np.log2(t + 1e-6) - np.log2(rng.permutation(c) + 1e-6)) > 1
        # the re-pairing of speciesvi's null: a random partner of the same abundance class in its own species
        matched = matched_permutation(
            abundance_bins(torch.as_tensor(np.log2(t + 1e-6))[None]),
            abundance_bins(torch.as_tensor(np.log2(c + 1e-6))[None]),
            torch.Generator().manual_seed(seed),
        ).numpy()
        within = np.abs(np.log2(t + 1e-6) - np.log2(c[matched] + 1e-6)) > 1
        out[cell_type] = {
            "real_pairs": round(float(real.mean()), 4),
            "random_pairs": round(float(shuffled.mean()), 4),
            "random_pairs_same_abundance": round(float(within.mean()), 4),
        }
    return out


def agreement(table: pd.DataFrame, human, mouse, types: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-type Spearman correlation with the pseudo-bulk lfc (known labels in both species), and the pseudo-bulk."""
    bulk = speciesvi.tl.pseudobulk_lfc(human, mouse, LABELS, gene_pairs=table, cell_types=types)
    return speciesvi.tl.lfc_agreement(table, bulk, min_expression=MIN_EXPRESSION, min_cells=MIN_CELLS), bulk


def original_tables(folder: Path, files: dict[str, str]) -> pd.DataFrame:
    human2mouse = one_to_one()
    frames = []
    for cell_type, name in files.items():
        frame = pd.read_csv(folder / name)
        frames.append(
            pd.DataFrame(
                {
                    "cell_type": cell_type,
                    "gene_target": frame["gene"],
                    "gene_context": frame["gene"].map(human2mouse),
                    "lfc": frame["lfc"],
                    "p": frame["p"],
                    "p_null": frame["p_rand"],
                }
            )
        )
    return pd.concat(frames, ignore_index=True).dropna(subset=["gene_context"])


def run_original_lfc(n_samples: int, threads: int) -> dict:
    """Time the original's compute_logfold_change on its saved models (its own environment)."""
    python = ensure_env()
    ORIGINAL_RERUN.mkdir(parents=True, exist_ok=True)
    driver = ORIGINAL_RERUN / "driver.py"
    driver.write_text(ORIGINAL_DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["MPLBACKEND"] = "Agg"
    if threads > 0:  # numpy's BLAS too, so that CPU time and wall time measure the same work
        env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    cmd = [
        str(python),
        str(driver),
        str(BENCH / "peers" / "run_scspecies.py"),
        str(SHARED_DATA / "baron_mouse_pancreas.h5ad"),
        str(SHARED_DATA / "baron_human_pancreas.h5ad"),
        str(DEFAULT_ORTHOLOGS),
        str(ORIGINAL_WORKDIR),
        str(ORIGINAL_RERUN),
        str(n_samples),
        str(threads),
    ]
    with open(ORIGINAL_RERUN / "driver.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=True, cwd=str(ORIGINAL_WORKDIR))
    return json.loads((ORIGINAL_RERUN / "timing.json").read_text())


def full_pair():
    """All cells and genes of the Baron pair: the pseudo-bulk of every method is computed on them."""
    mouse, human = speciesvi.datasets.baron_pancreas(path=SHARED_DATA)
    return human, mouse


def evaluate_seed(seed: int, n_samples: int) -> dict:
    target, _ = train_models(seed, 40, retrain=False)
    human, mouse = full_pair()
    types = shared_types(human.obs[LABELS], mouse.obs[LABELS])
    target.transfer_labels()
    result = {"seed": seed, "n_gene_pairs": int(target._homologous_genes()[0].size), "cell_types": types}
    tables = {}
    for name, key in (("transferred_labels", None), ("known_labels", LABELS)):
        load_start = loadavg()
        start, cpu_start = time.perf_counter(), time.process_time()
        table = target.homolog_lfc(labels_key=key, n_samples=n_samples, progress_bar=False)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        tables[name] = table
        evaluated = [t for t in types if t in set(table["cell_type"].astype(str))]
        per_type, bulk = agreement(table, human, mouse, evaluated)
        result[name] = {
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "n_cell_types_computed": int(table["cell_type"].nunique()),
            "seconds_per_cell_type": round(seconds / table["cell_type"].nunique(), 2),
            "cpu_seconds_per_cell_type": round(cpu_seconds / table["cell_type"].nunique(), 2),
            "loadavg_1min_start": load_start,
            "loadavg_1min_end": loadavg(),
            "spearman": per_type["spearman"].round(4).to_dict(),
            "spearman_median": round(float(per_type["spearman"].median()), 4),
            "n_genes_expressed": per_type["n_genes"].to_dict(),
            "calibration": calibration(table, evaluated),
        }
        if name == "known_labels":
            result["data_random_pairing"] = random_pairing_differs(bulk, evaluated)
            # the original's fixed-permutation null on speciesvi's draws, for reference
            result["fixed_permutation_null"] = fixed_permutation_null(target, evaluated, n_samples=5000)
            result["null_p_gt_0.9_by_expression"] = null_by_expression(table, evaluated)
    tables["known_labels"].to_csv(WORK_DIR / f"lfc_speciesvi_seed{seed}.csv", index=False)
    return result, tables


def fixed_permutation_null(target, types: list[str], n_samples: int) -> dict:
    """Share of pairs with p > 0.9 when the context genes are permuted once (the original's null), from decoded draws."""
    rng = np.random.default_rng(0)
    out = {}
    human_rho, mouse_rho = target.homologous_samples(labels_key=LABELS, cell_types=types, n_samples=n_samples)
    for cell_type in types:
        t = np.log2(human_rho[cell_type].to_numpy() + 1e-6)
        c = np.log2(mouse_rho[cell_type].to_numpy() + 1e-6)
        perm = rng.permutation(c.shape[1])
        p = (np.abs(t - c[:, perm]) > 1).mean(axis=0)
        out[cell_type] = round(float((p > 0.9).mean()), 4)
    return out


def null_by_expression(table: pd.DataFrame, types: list[str]) -> dict:
    """Share of pairs with p_null > 0.9 by the pair's higher decoded expression (where the null flags pairs)."""
    bins = [0, 1e-5, 1e-4, 1e-3, 1.0]
    names = ["<1e-5", "1e-5..1e-4", "1e-4..1e-3", ">1e-3"]
    out = {}
    for cell_type in types:
        group = table[table["cell_type"].astype(str) == cell_type]
        level = pd.cut(np.maximum(group["rho_target"], group["rho_context"]), bins, labels=names)
        flagged = (group["p_null"] > 0.9).groupby(level, observed=False)
        out[cell_type] = {name: [int(flagged.size()[name]), round(float(flagged.mean()[name]), 4)] for name in names}
    return out


def evaluate_original(human, mouse, types: list[str], ours: pd.DataFrame, files: dict, folder: Path) -> dict:
    table = original_tables(folder, files)
    per_type, _ = agreement(table, human, mouse, types)
    keys = ["cell_type", "gene_target", "gene_context"]
    ours = ours.astype({"cell_type": str})
    common_pairs = table[keys].merge(ours[keys], on=keys)
    ours_common = ours.merge(common_pairs, on=keys)
    original_common = table.merge(common_pairs, on=keys)
    ours_on_common, _ = agreement(ours_common, human, mouse, types)
    original_on_common, _ = agreement(original_common, human, mouse, types)
    return {
        "n_gene_pairs": int(table.groupby("cell_type").size().iloc[0]),
        "spearman": per_type["spearman"].round(4).to_dict(),
        "spearman_median": round(float(per_type["spearman"].median()), 4),
        "calibration": calibration(table, types),
        "common_pairs": {
            "n_gene_pairs": int(common_pairs.groupby("cell_type").size().iloc[0]),
            "speciesvi_spearman": ours_on_common["spearman"].round(4).to_dict(),
            "speciesvi_spearman_median": round(float(ours_on_common["spearman"].median()), 4),
            "original_spearman": original_on_common["spearman"].round(4).to_dict(),
            "original_spearman_median": round(float(original_on_common["spearman"].median()), 4),
        },
    }


def fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def markdown(results: dict) -> str:
    run = results["speciesvi"][0]
    original = results["original"]
    types = run["cell_types"]
    tr, kn = run["transferred_labels"], run["known_labels"]
    timing = original.get("timing", {})
    lines = [
        "# Homolog log2 fold changes (Baron mouse -> human)",
        "",
        f"`{results['command']}` on a shared {os.cpu_count()}-core CPU ({results['platform']}), torch threads: "
        f"{results['torch_threads']}. The 1-minute load average of the machine (other jobs included) is given with "
        "every timing.",
        "",
        f"Models: ContextVI + TargetVI, 40 + 40 epochs, seed {run['seed']} ({run['n_gene_pairs']} homologous gene "
        "pairs). Original: scSpecies 0.1.4, 40 + 40 epochs, seed 369963, its own 4,000 HVGs per species "
        f"({original['n_gene_pairs']} homologous genes), known human labels. Pseudo-bulk: mean of library-normalised "
        "counts per cell type and species, renormalised over each method's gene pairs; Spearman over the pairs "
        "expressed in either species (pseudo-bulk > 1e-4), cell types with >= 20 cells in both species (known labels).",
        "",
        "## Agreement with the data (Spearman, model lfc vs pseudo-bulk lfc)",
        "",
        "| cell type | speciesvi, transferred labels | speciesvi, known labels | original (its genes) "
        "| speciesvi, shared pairs | original, shared pairs |",
        "|---|---|---|---|---|---|",
    ]
    common = original["common_pairs"]
    for t in types:
        lines.append(
            f"| {t} | {fmt(tr['spearman'].get(t))} | {fmt(kn['spearman'].get(t))} | "
            f"{fmt(original['spearman'].get(t))} | {fmt(common['speciesvi_spearman'].get(t))} | "
            f"{fmt(common['original_spearman'].get(t))} |"
        )
    lines.append(
        f"| **median** | **{fmt(tr['spearman_median'])}** | **{fmt(kn['spearman_median'])}** | "
        f"**{fmt(original['spearman_median'])}** | **{fmt(common['speciesvi_spearman_median'])}** | "
        f"**{fmt(common['original_spearman_median'])}** |"
    )
    lines += [
        "",
        f"'Shared pairs': the {common['n_gene_pairs']} gene pairs both methods score, against the same pseudo-bulk.",
        "",
        "## Calibration: share of gene pairs with p > 0.9",
        "",
        "| cell type | speciesvi real | speciesvi null (abundance-matched re-pairing) | speciesvi, fixed permutation "
        "| original real | original null (fixed permutation) | data: real pairs > 2-fold | data: random pairs > 2-fold "
        "| data: abundance-matched random pairs > 2-fold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in types:
        cal, ocal = kn["calibration"][t], original["calibration"].get(t, {})
        data = run["data_random_pairing"][t]
        lines.append(
            f"| {t} | {cal['real_p_gt_0.9']:.3f} | {cal['null_p_gt_0.9']:.3f} | "
            f"{run['fixed_permutation_null'][t]:.3f} | {fmt(ocal.get('real_p_gt_0.9'))} | "
            f"{fmt(ocal.get('null_p_gt_0.9'))} | {data['real_pairs']:.3f} | {data['random_pairs']:.3f} | "
            f"{fmt(data.get('random_pairs_same_abundance'))} |"
        )
    lines += [
        "",
        "speciesvi columns use known labels (transferred labels: "
        + ", ".join(f"{t}: {v['null_p_gt_0.9']:.3f}" for t, v in tr["calibration"].items())
        + " on the null).",
        "Where the null flags pairs (known labels; pairs by their higher decoded expression, then the share with "
        "p_null > 0.9): "
        + "; ".join(
            f"{t}: " + ", ".join(f"{k} {v[1]:.3f} of {v[0]}" for k, v in run["null_p_gt_0.9_by_expression"][t].items())
            for t in types
        )
        + ".",
        "",
        "speciesvi's null re-pairs every gene, every 16 draws, with a random gene of the same abundance class in "
        "its own species (24 equal-frequency classes of mean log expression, as Seurat's control genes), so a pair "
        "is flagged on the null only if its genes differ for reasons other than their abundance. 'Fixed "
        "permutation' applies the original's null (one permutation of the context genes for all draws, abundance "
        "ignored) to 5,000 speciesvi draws. 'Data' columns: share of pairs whose pseudo-bulk expression differs "
        "more than two-fold, for the homologous pairs, a random re-pairing and an abundance-matched one.",
        "",
        "## Time",
        "",
        "Wall time depends on what else the shared machine runs (its 1-minute load average is given); the CPU "
        f"time of the process (torch threads: {results['torch_threads']} for both methods) measures the work itself. "
        f"speciesvi's output-layer products run in {results.get('precision', 'float32')} "
        "(`homolog_lfc(precision='auto')`).",
        "",
        f"- speciesvi `homolog_lfc`, n_samples = {results['n_samples']}, known labels: {kn['seconds']} s wall, "
        f"{kn['cpu_seconds']} s CPU for {kn['n_cell_types_computed']} cell types ({kn['seconds_per_cell_type']} s "
        f"wall, {kn['cpu_seconds_per_cell_type']} s CPU per type; load {kn['loadavg_1min_start']} -> "
        f"{kn['loadavg_1min_end']}). Transferred labels: {tr['seconds']} s wall, {tr['cpu_seconds']} s CPU for "
        f"{tr['n_cell_types_computed']} types (load {tr['loadavg_1min_start']} -> {tr['loadavg_1min_end']}).",
    ]
    if timing:
        n_types = len(timing["files"])
        wall = timing["compute_logfold_change_s"] / n_types
        cpu = timing.get("compute_logfold_change_cpu_s")
        cpu_text = f", {cpu} s CPU ({cpu / n_types:.1f} s per type)" if cpu is not None else ""
        lines.append(
            f"- original `compute_logfold_change`, samples = {timing['n_samples']}: "
            f"{timing['compute_logfold_change_s']} s wall{cpu_text} for {n_types} cell types ({wall:.1f} s wall per "
            f"type; torch threads {timing['torch_threads']}; load {timing['loadavg_start'][0]:.2f} -> "
            f"{timing['loadavg_end'][0]:.2f}; {timing.get('source', '')})."
        )
        per_pair = original["n_gene_pairs"] / run["n_gene_pairs"]
        speedups = [f"wall {wall / kn['seconds_per_cell_type']:.1f}x"]
        if cpu is not None:
            speedups.append(f"CPU {cpu / n_types / kn['cpu_seconds_per_cell_type']:.1f}x")
        lines.append(
            f"- speed-up per cell type: {', '.join(speedups)} (speciesvi scores {run['n_gene_pairs']} gene pairs, "
            f"the original {original['n_gene_pairs']}; per gene pair multiply by {1 / per_pair:.1f})."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-samples", type=int, default=50_000)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads of both methods (0: torch's default, all cores)"
    )
    parser.add_argument("--original", choices=("run", "cached"), default="cached")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="keep the speciesvi results of benchmarks/results/lfc.json and redo the original's part and the report",
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = BENCH / "results"
    previous = {}
    if args.report_only:
        previous = json.loads((out / "lfc.json").read_text())
        runs = previous["speciesvi"]
        args.n_samples = previous["n_samples"]
        table = pd.read_csv(WORK_DIR / f"lfc_speciesvi_seed{runs[0]['seed']}.csv")
        tables = {"known_labels": table}
    else:
        runs, tables = [], None
        for seed in args.seeds:
            result, seed_tables = evaluate_seed(seed, args.n_samples)
            runs.append(result)
            tables = tables or seed_tables
            print(json.dumps(result, indent=1, default=str), flush=True)

    human, mouse = full_pair()
    types = runs[0]["cell_types"]
    folder, timing = ORIGINAL_DIR / "lfc", {}
    files = json.loads((ORIGINAL_DIR / "metrics.json").read_text())["lfc"]["files"]
    stored = json.loads((ORIGINAL_DIR / "timings.json").read_text())
    if args.original == "run":
        timing = run_original_lfc(args.n_samples, args.threads)
        timing["source"] = "timed in this benchmark run on the saved models of its seed-369963 run"
        folder, files = ORIGINAL_RERUN, timing["files"]
    elif (ORIGINAL_RERUN / "timing.json").is_file():
        timing = json.loads((ORIGINAL_RERUN / "timing.json").read_text())
        timing["source"] = "from an earlier `--original run` of this benchmark"
        folder, files = ORIGINAL_RERUN, timing["files"]
    else:
        timing = {
            "compute_logfold_change_s": stored["stages_s"]["compute_logfold_change"],
            "n_samples": stored["lfc_samples"],
            "torch_threads": stored["torch_threads"],
            "loadavg_start": stored["loadavg_start"],
            "loadavg_end": stored["loadavg_end"],
            "files": files,
            "source": "stage time of its full run (load averages of the whole run)",
        }
    original = evaluate_original(human, mouse, types, tables["known_labels"], files, folder)
    original["timing"] = timing
    results = {
        "command": (previous["command"] + "` then `" if args.report_only else "")
        + "python benchmarks/bench_lfc.py "
        + " ".join(sys.argv[1:]),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "precision": str(fast_matmul_dtype("cpu")).removeprefix("torch."),
        "n_samples": args.n_samples,
        "speciesvi": runs,
        "original": original,
    }
    (out / "lfc.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = markdown(results)
    (out / "lfc.md").write_text(text)
    (REPO / "docs" / "benchmarks" / "lfc.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
