#!/usr/bin/env python
"""Run the ORIGINAL scSpecies implementation (PyPI ``scspecies==0.1.4``) on a context/target pair.

This script is a benchmark harness only: it imports the published package and calls its public
workflow; it must run inside the dedicated virtual environment built by
``benchmarks/peers/setup_scspecies_env.sh`` (``benchmarks/.envs/scspecies/bin/python``), never in the
speciesvi environment.

Two adaptations are needed to run the original offline here (see
``shared/reference/running_the_original.md``):

* ``create_mdata.translate_gene_list`` normally downloads a homology report or queries MyGene.info.
  It is replaced by a lookup in the Ensembl human->mouse ortholog table (one-to-one rows only;
  target symbols without a partner become ``non_hom_<i>``, as the original names them).
* The original crashes in its batch one-hot encoding when a cell type has <= 3 cells in every batch,
  so such cell types are dropped from both inputs beforehand.

Outputs in ``--out``: ``timings.json``, ``metrics.json``, ``labels.csv``, optionally
``similarity_df.csv`` and ``lfc/<cell type>.csv``; latent means go to ``--npy-dir`` (defaults to
``--out``). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import resource
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

STAGES = ("context", "target", "transfer", "similarity_df", "lfc")
# stage -> stages it needs
REQUIRES = {
    "context": (),
    "target": ("context",),
    "transfer": ("target",),
    "similarity_df": ("target",),
    "lfc": ("target",),
}
CONTEXT_NAME, TARGET_NAME = "mouse", "human"
CONTEXT_TAXON, TARGET_TAXON = 10090, 9606

log = logging.getLogger("run_scspecies")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ORTHOLOGS = REPO_ROOT.parent / "shared" / "data" / "ensembl_human2mouse_orthologs.csv.gz"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--context", required=True, type=Path, help="context (mouse) .h5ad, raw counts")
    p.add_argument("--target", required=True, type=Path, help="target (human) .h5ad, raw counts")
    p.add_argument("--orthologs", type=Path, default=DEFAULT_ORTHOLOGS, help="Ensembl human->mouse ortholog table")
    p.add_argument("--labels-key", default="cell_ontology_class")
    p.add_argument("--batch-key", default="donor")
    p.add_argument("--seed", type=int, default=369963)
    p.add_argument("--epochs-context", type=int, default=40)
    p.add_argument("--epochs-target", type=int, default=40)
    p.add_argument("--n-top-genes", type=int, default=4000, help="HVGs per species; 0 = all genes")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list out of {','.join(STAGES)}")
    p.add_argument("--lfc-samples", type=int, default=50000)
    p.add_argument(
        "--min-eval-cells",
        type=int,
        default=20,
        help="evaluate labels on target cells whose type has at least this many cells in both species",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave torch's default)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--npy-dir", type=Path, default=None, help="where latent_*.npy go (default: --out)")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch working directory (default: benchmarks/.work/scspecies_<out name>)",
    )
    return p.parse_args(argv)


def resolve_stages(spec: str) -> list[str]:
    asked = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in asked if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {STAGES}")
    wanted = set(asked)
    changed = True
    while changed:
        changed = False
        for s in list(wanted):
            for dep in REQUIRES[s]:
                if dep not in wanted:
                    log.warning("stage %r needs %r; adding it", s, dep)
                    wanted.add(dep)
                    changed = True
    return [s for s in STAGES if s in wanted]


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_one_to_one(path: Path) -> tuple[dict[str, str], dict]:
    """Human symbol -> mouse symbol from the one-to-one rows of the Ensembl table.

    Symbols that occur in more than one one-to-one row (a handful of snoRNA artefacts) are ambiguous
    and left unmapped.
    """
    import pandas as pd

    table = pd.read_csv(path)
    rows = table[table["human.homology.type"] == "ortholog_one2one"][["human.gene.name", "gene.name"]]
    rows = rows.dropna().drop_duplicates()
    ambiguous = rows["human.gene.name"].duplicated(keep=False) | rows["gene.name"].duplicated(keep=False)
    clean = rows[~ambiguous]
    info = {"one2one_rows": int(len(rows)), "ambiguous_dropped": int(ambiguous.sum()), "pairs": int(len(clean))}
    return dict(zip(clean["human.gene.name"], clean["gene.name"], strict=True)), info


def install_translation_patch(create_mdata_cls, human2mouse: dict[str, str], info: dict) -> None:
    """Replace the network-bound gene translation with the offline one-to-one table."""

    def translate_gene_list(self, adata):
        same_species = self.context_NCBI_Taxon_ID == adata.uns["metadata"]["NCBI_Taxon_ID"]
        names = [str(g) for g in adata.var_names]
        if same_species:
            transl = names
        else:
            transl = [human2mouse.get(g, f"non_hom_{i}") for i, g in enumerate(names)]
        n_hom = sum(not t.startswith("non_hom_") for t in transl)
        info["target_genes"] = len(transl)
        info["target_genes_translated"] = n_hom
        log.info(
            "gene translation (patched): %d of %d target genes have a one-to-one context symbol", n_hom, len(transl)
        )
        adata.var["var_names_transl"] = transl
        return adata

    create_mdata_cls.translate_gene_list = translate_gene_list


def drop_rare_types(adata, labels_key: str, batch_key: str, name: str) -> tuple[object, list[str]]:
    """Drop cell types with <= 3 cells in every batch (they crash the original's batch encoding)."""
    import pandas as pd

    counts = pd.crosstab(adata.obs[labels_key].astype(str), adata.obs[batch_key].astype(str))
    bad = sorted(counts.index[(counts <= 3).all(axis=1)])
    if bad:
        log.info("%s: dropping cell types with <= 3 cells in every batch: %s", name, bad)
    keep = ~adata.obs[labels_key].astype(str).isin(bad)
    adata = adata[keep.to_numpy()].copy()
    # the original iterates over .cat.categories, so unused categories must go as well
    adata.obs[labels_key] = adata.obs[labels_key].astype(str).astype("category")
    adata.obs[batch_key] = adata.obs[batch_key].astype(str).astype("category")
    return adata, bad


def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "unnamed"


def label_metrics(true, pred, eval_types) -> dict:
    import numpy as np

    true = np.asarray(true, dtype=object)
    pred = np.asarray(pred, dtype=object)
    mask = np.isin(true, list(eval_types))
    recall = {}
    for t in sorted(eval_types):
        sel = true == t
        recall[t] = float(np.mean(pred[sel] == t)) if sel.any() else None
    vals = [v for v in recall.values() if v is not None]
    return {
        "balanced_accuracy": float(np.mean(vals)) if vals else None,
        "accuracy": float(np.mean(pred[mask] == true[mask])) if mask.any() else None,
        "n_cells": int(mask.sum()),
        "recall": recall,
    }


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.timings: dict = {"stages_s": {}, "peak_rss_mb_after": {}}
        self.metrics: dict = {}
        self.out: Path = args.out.resolve()
        self.npy_dir: Path = (args.npy_dir or args.out).resolve()

    @contextlib.contextmanager
    def stage(self, name: str):
        log.info("=== stage %s: start", name)
        t0 = time.perf_counter()
        # the original prints its progress to stdout; keep stdout for nothing, send it to stderr
        with contextlib.redirect_stdout(sys.stderr):
            try:
                yield
            finally:
                dt = time.perf_counter() - t0
                self.timings["stages_s"][name] = round(dt, 3)
                self.timings["peak_rss_mb_after"][name] = round(peak_rss_mb(), 1)
                print("", file=sys.stderr)
                log.info("=== stage %s: %.1f s (peak RSS so far %.0f MB)", name, dt, peak_rss_mb())
                self.write_json("timings.json", self.timings)

    def write_json(self, name: str, obj) -> None:
        path = self.out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        tmp.replace(path)

    def run(self) -> int:
        a = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        self.npy_dir.mkdir(parents=True, exist_ok=True)
        context_path, target_path = a.context.resolve(), a.target.resolve()
        orth_path = a.orthologs.resolve()
        workdir = (a.workdir or (REPO_ROOT / "benchmarks" / ".work" / f"scspecies_{self.out.name}")).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        stages = resolve_stages(a.stages)
        t_start = time.perf_counter()

        import anndata as ad
        import numpy as np
        import pandas as pd
        import scspecies
        import torch
        from scspecies.models import scSpecies
        from scspecies.preprocessing import create_mdata, set_random_seed

        if a.threads > 0:
            torch.set_num_threads(a.threads)
        n_top = None if a.n_top_genes <= 0 else a.n_top_genes
        self.timings.update(
            {
                "implementation": "scspecies",
                "version": getattr(scspecies, "__version__", "?"),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "loadavg_start": list(os.getloadavg()),
                "host": platform.node(),
                "device": a.device,
                "seed": a.seed,
                "epochs_context": a.epochs_context,
                "epochs_target": a.epochs_target,
                "n_top_genes": n_top,
                "lfc_samples": a.lfc_samples,
                "stages": stages,
                "workdir": str(workdir),
            }
        )
        self.write_json("timings.json", self.timings)
        os.chdir(workdir)  # the original writes ./data and its model directory relative to the cwd
        lk, bk = a.labels_key, a.batch_key

        # ---------------- preprocessing ----------------
        with self.stage("preprocessing"):
            set_random_seed(a.seed)
            human2mouse, transl_info = load_one_to_one(orth_path)
            install_translation_patch(create_mdata, human2mouse, transl_info)
            context = ad.read_h5ad(context_path)
            target = ad.read_h5ad(target_path)
            context, dropped_c = drop_rare_types(context, lk, bk, "context")
            target, dropped_t = drop_rare_types(target, lk, bk, "target")
            n_c = context.obs[lk].value_counts()
            n_t = target.obs[lk].value_counts()
            eval_types = sorted(set(n_c.index[n_c >= a.min_eval_cells]) & set(n_t.index[n_t >= a.min_eval_cells]))
            log.info("evaluation cell types (>= %d cells in both species): %s", a.min_eval_cells, eval_types)

            builder = create_mdata(
                context,
                batch_key=bk,
                cell_key=lk,
                dataset_name=CONTEXT_NAME,
                NCBI_Taxon_ID=CONTEXT_TAXON,
                n_top_genes=n_top,
            )
            builder.setup_target_adata(
                target,
                batch_key=bk,
                cell_key=lk,
                dataset_name=TARGET_NAME,
                NCBI_Taxon_ID=TARGET_TAXON,
                n_top_genes=n_top,
            )
            mdata = builder.return_mdata()
            model = scSpecies(
                a.device,
                mdata,
                str(workdir / "model"),
                random_seed=a.seed,
                context_key=CONTEXT_NAME,
                target_key=TARGET_NAME,
            )
        cmod, tmod = mdata.mod[CONTEXT_NAME], mdata.mod[TARGET_NAME]
        suffix_t, suffix_c = f"_{TARGET_NAME}", f"_{CONTEXT_NAME}"
        self.metrics.update(
            {
                "implementation": "scspecies==" + self.timings["version"],
                "seed": a.seed,
                "labels_key": lk,
                "batch_key": bk,
                "dropped_cell_types": {"context": dropped_c, "target": dropped_t},
                "gene_translation": transl_info,
                "n_genes": {
                    "context": int(cmod.n_vars),
                    "target": int(tmod.n_vars),
                    "homologous": len(model.context_config["homologous_genes"]),
                },
                "n_cells_after_preprocessing": {"context": int(cmod.n_obs), "target": int(tmod.n_obs)},
                "cell_types_kept": {
                    "context": sorted(map(str, cmod.obs[lk].unique())),
                    "target": sorted(map(str, tmod.obs[lk].unique())),
                },
                "eval_min_cells": a.min_eval_cells,
                "eval_cell_types": eval_types,
            }
        )

        def strip(names, suffix):
            return [n[: -len(suffix)] if n.endswith(suffix) else n for n in map(str, names)]

        labels = pd.DataFrame(
            {
                "obs_name": strip(tmod.obs_names, suffix_t),
                "true_label": tmod.obs[lk].astype(str).to_numpy(),
                "pred_data_level": tmod.obs["pred_nns_" + lk].astype(str).to_numpy(),
            }
        )
        self.metrics["data_level"] = label_metrics(labels["true_label"], labels["pred_data_level"], eval_types)
        log.info("data-level NNS balanced accuracy: %.4f", self.metrics["data_level"]["balanced_accuracy"])
        self.write_outputs(labels)

        # ---------------- training ----------------
        if "context" in stages:
            with self.stage("context_training"):
                model.train_context(epochs=a.epochs_context)
                model.get_representation("context", save_intermediate=True, save_libsize=True)
            np.save(self.npy_dir / "latent_context.npy", np.asarray(cmod.obsm["z_mu"], dtype=np.float32))
            pd.DataFrame(
                {"obs_name": strip(cmod.obs_names, suffix_c), "label": cmod.obs[lk].astype(str).to_numpy()}
            ).to_csv(self.npy_dir / "latent_context_obs.csv", index=False)
        if "target" in stages:
            with self.stage("target_training"):
                model.train_target(epochs=a.epochs_target)
                model.get_representation("target", save_libsize=True)
            np.save(self.npy_dir / "latent_target.npy", np.asarray(tmod.obsm["z_mu"], dtype=np.float32))
            pd.DataFrame({"obs_name": labels["obs_name"], "label": labels["true_label"]}).to_csv(
                self.npy_dir / "latent_target_obs.csv", index=False
            )

        # ---------------- downstream ----------------
        if "transfer" in stages:
            with self.stage("transfer_labels_data"):
                model.transfer_labels_data(lk)
            labels["pred_similarity"] = tmod.obs["pred_sim_" + lk].astype(str).to_numpy()
            self.metrics["similarity"] = label_metrics(labels["true_label"], labels["pred_similarity"], eval_types)
            log.info(
                "similarity label transfer balanced accuracy: %.4f", self.metrics["similarity"]["balanced_accuracy"]
            )
            with contextlib.redirect_stdout(sys.stderr):
                # the original's own evaluation (over all types shared by both processed datasets)
                _, bas_sim = model.ret_pred_df("pred_sim_" + lk, lk, lk)
                _, bas_nns = model.ret_pred_df("pred_nns_" + lk, lk, lk)
            self.metrics["original_ret_pred_df_bas"] = {"similarity": float(bas_sim), "data_level": float(bas_nns)}
            self.write_outputs(labels)

        if "similarity_df" in stages:
            with self.stage("return_similarity_df"):
                sim_df = model.return_similarity_df()
            sim_df.to_csv(self.out / "similarity_df.csv")
            try:
                self.metrics["similarity_df_best_match"] = {
                    str(r): str(sim_df.loc[r].astype(float).idxmax()) for r in sim_df.index
                }
            except Exception:  # diagnostics only
                log.exception("could not summarise similarity_df")
            self.write_outputs(labels)

        if "lfc" in stages:
            with self.stage("compute_logfold_change"):
                lfc = model.compute_logfold_change(samples=a.lfc_samples)
            lfc_dir = self.out / "lfc"
            lfc_dir.mkdir(exist_ok=True)
            written = {}
            for key, df in lfc.items():
                if isinstance(df, pd.DataFrame):
                    fname = safe_filename(str(key)) + ".csv"
                    df.to_csv(lfc_dir / fname, index_label="gene")
                    written[str(key)] = fname
            self.metrics["lfc"] = {
                "lfc_delta": lfc.get("lfc_delta"),
                "files": written,
                "n_genes": int(next(iter(lfc.values())).shape[0]) if written else 0,
            }
            self.write_outputs(labels)

        self.timings["total_s"] = round(time.perf_counter() - t_start, 3)
        self.timings["peak_rss_mb"] = round(peak_rss_mb(), 1)
        self.timings["loadavg_end"] = list(os.getloadavg())
        self.timings["status"] = "ok"
        self.write_json("timings.json", self.timings)
        self.write_outputs(labels)
        log.info("done in %.1f s; outputs in %s", self.timings["total_s"], self.out)
        return 0

    def write_outputs(self, labels) -> None:
        labels.to_csv(self.out / "labels.csv", index=False)
        self.write_json("metrics.json", self.metrics)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    runner = Runner(args)
    try:
        return runner.run()
    except Exception as exc:  # noqa: BLE001 - record the failure for the caller, then fail
        log.error("failed: %s\n%s", exc, traceback.format_exc())
        runner.timings["status"] = "failed"
        runner.timings["error"] = f"{type(exc).__name__}: {exc}"
        runner.timings["peak_rss_mb"] = round(peak_rss_mb(), 1)
        try:
            runner.out.mkdir(parents=True, exist_ok=True)
            runner.write_json("timings.json", runner.timings)
        except Exception:  # noqa: BLE001
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
