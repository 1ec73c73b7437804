"""Homolog log2 fold changes per gene set on the Baron pair (mouse -> human), with the shipped hand-made GMT.

    python benchmarks/bench_gene_sets.py [--seed 0] [--epochs 40] [--n-samples 10000] [--report-only]

Models: the ContextVI/TargetVI of ``benchmarks/bench_label_transfer.py`` (the demo genes of ``pp.select_genes``;
cached in benchmarks/.work/label_transfer/seed{N}_e{epochs}, trained there if missing). ``homolog_lfc`` runs on
the known human labels (``cell_ontology_class``) with ``n_samples`` draws per type (the demo's 10,000) and its
table is cached in benchmarks/.work/gene_sets/; ``--report-only`` reuses it.

Measured, with ``tests/data/pancreas_small.gmt`` (ten hand-made pancreas sets, human symbols):

* the top three gene sets of every cell type (by ``pval_enrichment``), with their median LFC, shares of changed
  genes, adjusted p-values and leading genes;
* the null's share of flagged sets: (cell type, set) rows with ``pval_null < 0.05``, for 1, 24, 100 and 200
  abundance classes (200 is the default), on the shipped sets and on ``--n-random`` random sets of 15 genes
  drawn from the table's genes (random sets also give the share flagged by ``padj_enrichment < 0.05``, a false
  discovery check, and by ``pval < 0.05``);
* the wall time of ``gene_set_lfc``.

Writes benchmarks/results/gene_sets.{json,md}, docs/benchmarks/gene_sets.md and docs/benchmarks/gene_sets_plot.png
(``pl.gene_set_lfc``, the top three sets of every type).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scvi
import torch

import speciesvi

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
from benchmarks.bench_label_transfer import LABELS, train_models  # noqa: E402

WORK = BENCH / ".work" / "gene_sets"
RESULTS = BENCH / "results"
DOCS = REPO / "docs" / "benchmarks"
GMT = REPO / "tests" / "data" / "pancreas_small.gmt"
CLASSES = (1, 24, 100, 200)
ALPHA = 0.05
SHOWN = [
    "gene_set",
    "n_genes",
    "lfc_median",
    "share",
    "share_up",
    "share_down",
    "share_null",
    "rate_background",
    "padj_enrichment",
    "top_genes",
]
logger = logging.getLogger("bench_gene_sets")


def lfc_table(seed: int, epochs: int, n_samples: int, report_only: bool) -> tuple[pd.DataFrame, dict]:
    """The homolog LFC table of the demo pair (cached)."""
    path = WORK / f"lfc_seed{seed}_e{epochs}_n{n_samples}.csv"
    info_path = path.with_suffix(".json")
    if path.is_file() and (report_only or info_path.is_file()):
        table = pd.read_csv(path)
        table["cell_type"] = pd.Categorical(table["cell_type"])
        return table, json.loads(info_path.read_text()) if info_path.is_file() else {}
    if report_only:
        raise SystemExit(f"--report-only: no cached table at {path}; run without it first.")
    target, info = train_models(seed, epochs, retrain=False)
    start, cpu = time.perf_counter(), time.process_time()
    table = target.homolog_lfc(labels_key=LABELS, n_samples=n_samples, progress_bar=False, random_state=seed)
    info = {
        **info,
        "homolog_lfc_s": round(time.perf_counter() - start, 1),
        "homolog_lfc_cpu_s": round(time.process_time() - cpu, 1),
        "n_gene_pairs": int(table["gene_target"].nunique()),
    }
    WORK.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    info_path.write_text(json.dumps(info, indent=2))
    return table, info


def flagged_shares(table: pd.DataFrame, gene_sets: dict[str, list[str]]) -> dict:
    """Share of (cell type, set) rows flagged on the null, per number of abundance classes."""
    out = {}
    for n_classes in CLASSES:
        result = speciesvi.tl.gene_set_lfc(table, gene_sets, n_abundance_classes=n_classes)
        out[str(n_classes)] = {
            "rows": len(result),
            "null_flagged": int((result["pval_null"] < ALPHA).sum()),
            "null_flagged_share": round(float((result["pval_null"] < ALPHA).mean()), 4),
            "enrichment_flagged_share": round(float((result["padj_enrichment"] < ALPHA).mean()), 4),
            "vs_null_flagged_share": round(float((result["pval"] < ALPHA).mean()), 4),
        }
    return out


def random_sets(table: pd.DataFrame, n_sets: int, size: int = 15, seed: int = 0) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    genes = pd.unique(table["gene_target"].astype(str))
    return {f"random_{i}": list(rng.choice(genes, size, replace=False)) for i in range(n_sets)}


def run(seed: int, epochs: int, n_samples: int, n_random: int, report_only: bool) -> dict:
    table, info = lfc_table(seed, epochs, n_samples, report_only)
    gene_sets = speciesvi.tl.read_gmt(GMT)
    start = time.perf_counter()
    result = speciesvi.tl.gene_set_lfc(table, gene_sets, species="target")
    seconds = time.perf_counter() - start
    flagged_genes = table.assign(flag=table["p"] > 0.9, flag_null=table["p_null"] > 0.9).groupby(
        "cell_type", observed=True
    )
    speciesvi.pl.gene_set_lfc(
        result, n_top=3, target_name="human", context_name="mouse", save=DOCS / "gene_sets_plot.png"
    )
    plt.close("all")
    top = {
        str(cell_type): rows.head(3)[SHOWN].round(4).to_dict("records")
        for cell_type, rows in result.groupby("cell_type", observed=True)
    }
    return {
        "seed": seed,
        "epochs": epochs,
        "n_samples": n_samples,
        "labels": LABELS,
        "gmt": str(GMT.relative_to(REPO)),
        "n_gene_sets": len(gene_sets),
        "n_gene_sets_kept": int(result["gene_set"].nunique()),
        "gene_sets_kept": sorted(result["gene_set"].unique()),
        "cell_types": [str(t) for t in result["cell_type"].cat.categories],
        "models": info,
        "gene_set_lfc_s": round(seconds, 3),
        "pairs_p_gt_0.9": flagged_genes["flag"].mean().round(4).to_dict(),
        "pairs_p_null_gt_0.9": flagged_genes["flag_null"].mean().round(5).to_dict(),
        "top_sets": top,
        "shipped_sets": flagged_shares(table, gene_sets),
        "random_sets": {"n_sets": n_random, "size": 15, **flagged_shares(table, random_sets(table, n_random))},
        "table": result.round(5).to_dict("records"),
        "platform": {
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_1min": os.getloadavg()[0],
            "versions": {
                "speciesvi": speciesvi.__version__,
                "scvi-tools": scvi.__version__,
                "torch": torch.__version__,
            },
        },
    }


def fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(results: dict) -> str:
    models = results["models"]
    lines = [
        "# Gene sets: homolog LFC per gene set on the Baron pair",
        "",
        f"`python benchmarks/bench_gene_sets.py --seed {results['seed']} --epochs {results['epochs']} "
        f"--n-samples {results['n_samples']}`. Mouse context, human target, {results['epochs']} + "
        f"{results['epochs']} epochs (seed {results['seed']}, demo genes); `homolog_lfc` on the known human labels "
        f"(`{results['labels']}`), {results['n_samples']:,} draws per type"
        + (f", {models['n_gene_pairs']:,} homologous gene pairs" if "n_gene_pairs" in models else "")
        + f". Gene sets: `{results['gmt']}` (ten hand-made sets, human symbols), "
        f"{results['n_gene_sets_kept']} of {results['n_gene_sets']} with at least 5 genes in the table "
        f"({', '.join(results['gene_sets_kept'])}). `tl.gene_set_lfc` took {results['gene_set_lfc_s']:.2f} s.",
        "",
        f"Machine: {results['platform']['processor']}, {results['platform']['cpus']} CPUs (CPU only); "
        + ", ".join(f"{k} {v}" for k, v in results["platform"].get("versions", {}).items())
        + "; `scspecies` not used (the original has no gene-set test, only `load_and_filter_pathways`).",
        "",
        "![Top three gene sets per cell type](gene_sets_plot.png)",
        "",
        "## The null's share of flagged sets",
        "",
        f"(cell type, set) rows with `pval_null < {ALPHA}` (the binomial test against the null's abundance-matched "
        "rate, applied to the set's count on the gene-permuted null), by number of abundance classes (200: the "
        "default). Random sets: 15 genes drawn from the table's genes; for them `padj_enrichment < 0.05` is a false "
        "discovery and `pval < 0.05` (more changed genes than on the null) is expected.",
        "",
        "| sets | classes | rows | null flagged | null share | `padj_enrichment` < 0.05 | `pval` < 0.05 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("shipped_sets", "random_sets"):
        for n_classes, row in results[name].items():
            if not n_classes.isdigit():
                continue
            lines.append(
                f"| {name.replace('_', ' ')} | {n_classes} | {row['rows']} | {row['null_flagged']} | "
                f"{row['null_flagged_share']:.1%} | {row['enrichment_flagged_share']:.1%} | "
                f"{row['vs_null_flagged_share']:.1%} |"
            )
    lines += [
        "",
        "Share of gene pairs with `p > 0.9` per cell type (real comparison / null): "
        + "; ".join(
            f"{t} {results['pairs_p_gt_0.9'][t]:.1%} / {results['pairs_p_null_gt_0.9'][t]:.2%}"
            for t in results["pairs_p_gt_0.9"]
        )
        + ".",
        "",
        "## Top gene sets per cell type",
        "",
        "The three sets with the smallest `pval_enrichment` per cell type (changed share beyond genes of like "
        "abundance). `share`: members with p > 0.9 (up: higher in human, down: higher in mouse); `rate_background`: "
        "the expected share for genes of like abundance; `top_genes`: changed members, largest |lfc| first.",
        "",
        "| cell type | " + " | ".join(SHOWN) + " |",
        "| --- | " + " | ".join("---" for _ in SHOWN) + " |",
    ]
    for cell_type, rows in results["top_sets"].items():
        for row in rows:
            lines.append(f"| {cell_type} | " + " | ".join(fmt(row[c]) for c in SHOWN) + " |")
    lines += [
        "",
        f"1-min load {results['platform']['loadavg_1min']:.2f} at the end (another benchmark was running); "
        f"training took {results['models'].get('context_train_s', '?')} s (context) and "
        f"{results['models'].get('target_train_s', '?')} s (target), `homolog_lfc` "
        f"{results['models'].get('homolog_lfc_s', '?')} s, all at nice 19 on the busy machine.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--n-random", type=int, default=300)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = run(args.seed, args.epochs, args.n_samples, args.n_random, args.report_only)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gene_sets.json").write_text(json.dumps(results, indent=2, default=str))
    (RESULTS / "gene_sets.md").write_text(markdown(results))
    (DOCS / "gene_sets.md").write_text(markdown(results))
    logger.info("wrote %s and %s", RESULTS / "gene_sets.json", RESULTS / "gene_sets.md")


if __name__ == "__main__":
    main()
