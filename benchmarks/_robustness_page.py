"""The page of the robustness suite: its tables, from the scores ``benchmarks/robustness.py`` collects."""

from __future__ import annotations

from benchmarks._robustness_data import case_name, describe
from benchmarks.run import MIN_CELLS, fmt, mean_sd

METHODS = ("speciesvi", "knn_homologous", "ingest", "celltypist", "scanvi")
#: table columns: (method, variant, header); speciesvi's first, then the peers'
VARIANTS = [
    ("speciesvi", "transfer_all", "speciesvi (every cell labelled)"),
    ("speciesvi", "transfer", "speciesvi at the defaults"),
    ("speciesvi", "similarity_only", "speciesvi similarity vote only"),
    ("speciesvi", "majority_voting", "speciesvi majority voting"),
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
    "transfer_labels_similarity_only": "`transfer_labels(keep_data_level=None, unassigned_threshold=None)`",
    "transfer_labels_majority_voting": "`transfer_labels(over_clustering='leiden', unassigned_threshold=None)`",
    "latent_knn": "latent kNN",
    "homolog_lfc": "one `homolog_lfc` (one cell type)",
}


#: Novelty rules (robust SDs) whose Unassigned shares the page reports, the default among them.
SDS_GRID = (3.0, 3.5, 4.0, 4.5, 5.0)


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
    cells["voting_vs_best_peer"] = check(per_seed(runs, "speciesvi", "majority_voting"), best_scores)
    return cells


def markdown(payload: dict) -> tuple[str, str]:
    """The page and its block for docs/benchmarks.md."""
    m, infos, rows = payload["machine"], payload["cases"], payload["rows"]
    headers = ["case", VARIANTS[0][2], "speciesvi PP / D recall", *[name for _, _, name in VARIANTS[1:]]]
    headers += ["best peer", "speciesvi ≥ data-level", "speciesvi ≥ best peer", "speciesvi majority voting ≥ best peer"]
    keys = ["speciesvi:transfer_all", "speciesvi:types", *[f"{mm}:{v}" for mm, v, _ in VARIANTS[1:]]]
    keys += ["best_peer", "vs_data_level", "vs_best_peer", "voting_vs_best_peer"]
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
    rules = ["| case | " + " | ".join(f"{sds} SDs" for sds in SDS_GRID) + " |", "|" + " --- |" * (len(SDS_GRID) + 1)]
    for c in names:
        runs = payload["runs"][c]
        cells = []
        for sds in SDS_GRID:
            shared, novel = (
                [
                    r["scores"]["transfer"].get(f"{g}_unassigned_at", {}).get(str(sds))
                    for r in runs.get("speciesvi", {}).values()
                ]
                for g in ("shared", "novel")
            )
            shared, novel = [v for v in shared if v is not None], [v for v in novel if v is not None]
            cells.append(f"{fmt(shared)} / {fmt(novel)}" if shared else "–")
        rules.append(f"| {case_name(infos[c])} | " + " | ".join(cells) + " |")
    novelty += [
        "",
        "Share of shared / novel cells Unassigned (mean over seeds) had the rule been `p_known = Phi(sds - u)`:",
        "",
        *rules,
    ]
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
        "The peers run once per case (seed 0): kNN, ingest and CellTypist do not depend on the seed, and scVI + "
        "scANVI (three 40-epoch trainings) is run for seed 0 only, for time; speciesvi runs every seed. ",
        f"Balanced accuracy (mean ± sd over seeds): mean recall over the target types with >= {MIN_CELLS} cells in "
        "both the context and the target; every cell counts, 'Unassigned' as wrong. 'speciesvi' is "
        "`transfer_labels(unassigned_threshold=None)` (every cell labelled, as the peers label them); 'at the "
        "defaults' keeps its novelty rule. 'similarity vote only' is `transfer_labels(keep_data_level=None, "
        "unassigned_threshold=None)`: the similarity vote decides every cell, near-unanimous data-level votes "
        "included (the rule before `keep_data_level`). 'majority voting' is `transfer_labels(over_clustering="
        "'leiden', unassigned_threshold=None)`, CellTypist's majority voting over Leiden clusters of the latent "
        "space, to set beside CellTypist's own. PP / D (and A below) recall: over all target cells of the type whenever "
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
