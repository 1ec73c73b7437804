"""One step of the scaling suite of ``benchmarks/run.py``, run in a fresh process.

    python benchmarks/_scaling_step.py STEP --cells N --out FILE.json [--seed 0] [--accelerator cpu]

Steps: ``prepare`` (tile the Baron cells to N per species, cached), ``homolog_neighbors``, ``context_epoch``
(a fresh ContextVI, one epoch), ``target_epoch`` (TargetVI against the seed's cached context model of
``benchmarks/bench_label_transfer.py``, construction + one epoch), ``transfer_labels`` and ``homolog_lfc``
(the seed's cached 40 + 40-epoch models; the LFC per cell type of the tiled cells' annotation, only timed). The JSON holds the wall time of the step, its CPU time (all threads of the process; on a shared machine the
less noisy figure), the process's peak RSS
(``VmHWM``, including the loaded data and models) and the load average around the step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "peers"))

from _peer_io import peak_rss_mb  # noqa: E402

SUITE = BENCH / ".work" / "suite" / "scaling"


def data_dir(cells: int) -> Path:
    """Folder of the tiled data of one size."""
    return SUITE / f"n{cells}" / "data"


def prepare(cells: int, seed: int) -> None:
    """Tile both species to ``cells`` cells (binomial thinning), translate the human genes; cached."""
    folder = data_dir(cells)
    if (folder / "human.h5ad").is_file() and (folder / "mouse.h5ad").is_file():
        return
    import numpy as np
    from bench_label_transfer import load_pair
    from bench_label_transfer_scale import tile

    folder.mkdir(parents=True, exist_ok=True)
    mouse, human = load_pair()  # translate_genes, then select_genes, on the original cells (the models' genes)
    rng = np.random.default_rng(seed)
    mouse, human = tile(mouse, cells, rng), tile(human, cells, rng)  # keeps human.var["context_gene"]
    mouse.write_h5ad(folder / "mouse.h5ad")
    human.write_h5ad(folder / "human.h5ad")


def models(seed: int, mouse, human):
    """The seed's cached context and target models of bench_label_transfer, on the tiled data."""
    from bench_label_transfer import BATCH, LABELS, WORK, train_models

    import speciesvi

    folder = WORK / f"seed{seed}_e40"
    if not (folder / "model.pt").is_file():
        train_models(seed, 40, retrain=False)
    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH, labels_key=LABELS)
    speciesvi.TargetVI.setup_anndata(human, batch_key=BATCH)
    context = speciesvi.ContextVI.load(str(folder / "context"), adata=mouse)
    return context, folder


def run(step: str, cells: int, seed: int, accelerator: str) -> dict:
    """Load what the step needs, time the step itself."""
    import anndata as ad
    import scvi
    from bench_label_transfer import BATCH, LABELS, warm_up

    import speciesvi

    scvi.settings.seed = seed
    scvi.settings.verbosity = 30
    folder = data_dir(cells)
    if step == "prepare":
        prepare(cells, seed)
        return {}
    mouse = ad.read_h5ad(folder / "mouse.h5ad")
    human_file = folder / ("human.h5ad" if step == "homolog_neighbors" else "human_neighbors.h5ad")
    human = ad.read_h5ad(human_file)
    train = {"max_epochs": 1, "enable_progress_bar": False, "accelerator": accelerator}
    call = None
    if step == "homolog_neighbors":

        def call():
            speciesvi.pp.homolog_neighbors(human, mouse, labels_key=LABELS)

    elif step == "context_epoch":
        speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH, labels_key=LABELS)

        def call():
            speciesvi.ContextVI(mouse).train(**train)

    elif step == "target_epoch":
        context, _ = models(seed, mouse, human)

        def call():
            speciesvi.TargetVI(human, context).train(**train)

    elif step in ("transfer_labels", "homolog_lfc"):
        context, model_dir = models(seed, mouse, human)
        target = speciesvi.TargetVI.load(model_dir, adata=human, context_model=context)
        if step == "transfer_labels":
            warm_up(target)
            call = target.transfer_labels
        else:  # per cell type of the (tiled) annotation; only the time and memory are recorded

            def call():
                target.homolog_lfc(labels_key=LABELS, progress_bar=False)

    else:
        raise SystemExit(f"unknown step {step!r}")
    load = round(os.getloadavg()[0], 2)
    cpu_start = time.process_time()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    if step == "homolog_neighbors":
        human.write_h5ad(folder / "human_neighbors.h5ad")
    return {
        "step": step,
        "cells": cells,
        "n_context": int(mouse.n_obs),
        "n_target": int(human.n_obs),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "peak_rss_mb": peak_rss_mb(),
        "loadavg": [load, round(os.getloadavg()[0], 2)],
        "threads": int(__import__("torch").get_num_threads()),
    }


def main(argv=None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step")
    parser.add_argument("--cells", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run(args.step, args.cells, args.seed, args.accelerator)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
