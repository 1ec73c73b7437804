"""Data of the robustness suite (``benchmarks/run.py --suite robustness``): one folder of files per case.

A case is a context and a target of Baron pancreas cells (``speciesvi.datasets.baron_pancreas``, shared data):

* ``<direction>_<genes>``: ``mouse_to_human`` (mouse context, human target) or ``human_to_mouse``, prepared as
  ``benchmarks/diagnose_transfer_steps.py`` does: ``pp.translate_genes`` (with the context), then, for
  ``genes="select"``, ``pp.select_genes`` (donor batches); ``genes="all"`` keeps every gene of both species.
* ``self_<species>``: context self-projection; the donor of that species with the most cells is the target,
  its other donors the context. The same species, so the homology table is the identity (every gene is its
  own homolog, ``homology_type`` one2one) and ``translate_genes`` runs with it as usual; then
  ``select_genes``.

Every case folder holds ``speciesvi_context.h5ad`` (raw counts, labels, donors, all genes of the case),
``speciesvi_target.h5ad`` (raw counts, donors and ``var["context_gene"]``, no labels), ``context.h5ad`` and
``target.h5ad`` for the peers (the one-to-one homologous genes of the case, target genes renamed to their
context symbols, the format of ``run.baron_data``), ``truth.csv`` (target labels: read by the scorer only),
``reference.csv`` (context labels) and ``case.json`` (how the case was made).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

LABELS, BATCH = "cell_ontology_class", "donor"
DIRECTIONS = {"mouse_to_human": ("mouse", "human"), "human_to_mouse": ("human", "mouse")}  # (context, target)
GENE_SETS = ("select", "all")
FILES = ("speciesvi_context", "speciesvi_target", "context", "target", "truth", "reference", "case")
SUBSAMPLE_SEED = 0


def cases(directions: list[str], genes: list[str]) -> list[dict]:
    """The cases of a run: every direction x gene set, then the self-projection of each context species."""
    out = [
        {"case": f"{d}_{g}", "kind": "cross", "direction": d, "genes": g, "context": DIRECTIONS[d][0]}
        for d in directions
        for g in genes
    ]
    for species in dict.fromkeys(DIRECTIONS[d][0] for d in directions):
        out.append(
            {"case": f"self_{species}", "kind": "self", "direction": None, "genes": "select", "context": species}
        )
    return out


def case_files(folder: Path) -> dict[str, Path]:
    """Paths of the files of one case folder."""
    names = {"truth": "truth.csv", "reference": "reference.csv", "case": "case.json"}
    return {key: folder / names.get(key, f"{key}.h5ad") for key in FILES}


def _subsample(adata, n: int | None):
    """``n`` random cells (fixed seed), in their original order; all cells when ``n`` is None or larger."""
    if not n or n >= adata.n_obs:
        return adata
    rows = np.sort(np.random.default_rng(SUBSAMPLE_SEED).choice(adata.n_obs, size=n, replace=False))
    return adata[rows].copy()


def _load(subsample: int | None) -> dict:
    """Both species of the Baron pair, each cut to ``subsample`` cells when given."""
    import speciesvi
    from benchmarks._original import SHARED_DATA

    mouse, human = speciesvi.datasets.baron_pancreas(path=SHARED_DATA)
    return {"mouse": _subsample(mouse, subsample), "human": _subsample(human, subsample)}


def _cross(case: dict, data: dict) -> tuple:
    """Context and target of a cross-species case, translated and (for ``select``) gene-selected."""
    import speciesvi

    context_species, target_species = DIRECTIONS[case["direction"]]
    context, target = data[context_species], data[target_species]
    table = speciesvi.pp.homology_table(target_species, context_species)
    speciesvi.pp.translate_genes(target, table, context=context)
    if case["genes"] == "select":
        speciesvi.pp.select_genes(target, context, target_batch_key=BATCH, context_batch_key=BATCH)
    return context, target, {"target_species": target_species}


def _self(case: dict, data: dict) -> tuple:
    """Context and target of a self-projection: the largest donor held out, identity homology."""
    import speciesvi

    adata = data[case["context"]]
    sizes = adata.obs[BATCH].astype(str).value_counts()
    held_out = str(sizes.index[0])  # the donor with the most cells (ties: value_counts order)
    is_target = (adata.obs[BATCH].astype(str) == held_out).to_numpy()
    target, context = adata[is_target].copy(), adata[~is_target].copy()
    genes = target.var_names.to_numpy()
    identity = pd.DataFrame({"target_gene": genes, "context_gene": genes, "homology_type": "one2one"})
    speciesvi.pp.translate_genes(target, identity, context=context)
    speciesvi.pp.select_genes(target, context, target_batch_key=BATCH, context_batch_key=BATCH)
    info = {
        "target_species": case["context"],
        "held_out_donor": held_out,
        "donor_rule": "the donor with the most cells",
        "donor_cells": {str(k): int(v) for k, v in sizes.items()},
    }
    return context, target, info


def homologous_pair(context, target) -> tuple:
    """Both data sets on the one-to-one homologous genes, target genes renamed to their context symbols."""
    symbols = target.var["context_gene"].astype(object)
    keep = symbols.notna().to_numpy() & np.isin(symbols.astype(str), context.var_names)
    target = target[:, keep].copy()
    target.var_names = symbols[keep].astype(str).to_numpy()
    target = target[:, ~target.var_names.duplicated()].copy()
    return context[:, target.var_names].copy(), target


def prepare_case(case: dict, root: Path, subsample: int | None = None) -> dict[str, Path]:
    """Write the files of one case once (cached in ``root/<case>/data``); return their paths."""
    folder = root / case["case"] / "data"
    files = case_files(folder)
    if all(path.is_file() for path in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    data = _load(subsample)
    context, target, info = (_self if case["kind"] == "self" else _cross)(case, data)
    context.obs = context.obs[[LABELS, BATCH]].copy()
    target.obs[[LABELS]].rename(columns={LABELS: "label"}).to_csv(files["truth"])
    context.obs[[LABELS]].rename(columns={LABELS: "label"}).to_csv(files["reference"])
    target.obs = target.obs[[BATCH]].copy()
    target.var = target.var[[c for c in ("context_gene", "homology_type") if c in target.var]].copy()
    target.uns, context.uns, context.var = {}, {}, context.var[[]].copy()
    peer_context, peer_target = homologous_pair(context, target)
    peer_target.var, peer_context.var = peer_target.var[[]].copy(), peer_context.var[[]].copy()
    context.write_h5ad(files["speciesvi_context"])
    target.write_h5ad(files["speciesvi_target"])
    peer_context.write_h5ad(files["context"])
    peer_target.write_h5ad(files["target"])
    info.update(
        {
            **{k: case[k] for k in ("case", "kind", "direction", "genes")},
            "context_species": case["context"],
            "subsample": subsample,
            "n_cells": {"context": int(context.n_obs), "target": int(target.n_obs)},
            "n_genes": {
                "context": int(context.n_vars),
                "target": int(target.n_vars),
                "homologous_one2one": int(peer_target.n_vars),
            },
        }
    )
    files["case"].write_text(json.dumps(info, indent=2))
    return files


def case_name(info: dict) -> str:
    """Row name of a case."""
    if info["kind"] == "self":
        return f"self-projection {info['context_species']} (held out: {info['held_out_donor']})"
    context, target = DIRECTIONS[info["direction"]]
    return f"{context} → {target}, {info['genes']} genes"


def describe(info: dict) -> str:
    """One line on how a case was made."""
    cells, genes = info["n_cells"], info["n_genes"]
    line = (
        f"- `{info['case']}`: {info['context_species']} context ({cells['context']:,} cells), "
        f"{info['target_species']} target ({cells['target']:,} cells); genes `{info['genes']}`: "
        f"{genes['context']:,} context, {genes['target']:,} target, {genes['homologous_one2one']:,} one-to-one "
        "homologous (the peers' genes)"
    )
    if info["kind"] == "self":
        donors = ", ".join(f"{d} {n:,}" for d, n in info["donor_cells"].items())
        line += f"; held-out donor {info['held_out_donor']} ({info['donor_rule']}; cells per donor: {donors})"
    return line + "."
