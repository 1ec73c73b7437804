"""speciesvi as a suite member: ContextVI + TargetVI (40 + 40 epochs) and ``TargetVI.transfer_labels``.

Runs in the main environment. speciesvi uses the full gene selection of ``benchmarks/bench_label_transfer.py``
(``load_pair``: ``translate_genes``, then ``select_genes``, per species its 4,000 most variable genes plus the
homologs of the other species' ones; both run before the timed steps), not only the homologous genes, so
``--context``/``--target`` are not read; the target cells are the same. The
models are those of ``bench_label_transfer.train_models`` (cached in
``benchmarks/.work/label_transfer/seed<N>_e<epochs>``): when they exist they are loaded, and the training
times are the ones recorded when they were trained (``fit_from_cache`` in ``result.json``); ``--retrain``
trains fresh models in this process (saved under ``--out``), so that training time and memory are measured.
The human labels are never read: ``TargetVI.setup_anndata`` registers the donor batches only, and the
Unassigned rule of ``transfer_labels`` (default threshold 0.5) is label-free.

Variants: ``transfer`` (``transfer_labels``: label, confidence, "Unassigned") and ``data_level`` (the majority
context label among the 25 data-level neighbours of ``pp.homolog_neighbors``, confidence = vote share).

    python benchmarks/peers/speciesvi_peer.py --context - --target - --out DIR --seed 0 [--retrain]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _peer_io import Recorder, loadavg, parser, versions  # noqa: E402


def main(argv=None) -> None:
    """Load (or train) the models, time the target-specific steps and the label transfer."""
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--retrain", action="store_true", help="train fresh models here instead of loading the cache")
    args = p.parse_args(argv)
    import scvi
    import torch
    from bench_label_transfer import BATCH, LABELS, WORK, load_pair, warm_up

    import speciesvi

    scvi.settings.seed = args.seed
    scvi.settings.verbosity = 30
    rec = Recorder(args, "speciesvi")
    mouse, human = load_pair()  # translate_genes, then select_genes (both species, before any timing)
    human.obs = human.obs[[BATCH]].copy()  # the labels are not needed and not kept
    folder = WORK / f"seed{args.seed}_e{args.epochs}"
    cached = (folder / "model.pt").is_file() and not args.retrain
    start = time.perf_counter()
    with rec.timed("query"):
        speciesvi.pp.homolog_neighbors(human, mouse, labels_key=LABELS)
    rec.result["homolog_neighbors_s"] = round(time.perf_counter() - start, 3)
    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH, labels_key=LABELS)
    speciesvi.TargetVI.setup_anndata(human, batch_key=BATCH)
    train = {"max_epochs": args.epochs, "enable_progress_bar": False, "accelerator": args.accelerator}
    if cached:
        context = speciesvi.ContextVI.load(str(folder / "context"), adata=mouse)
        target = speciesvi.TargetVI.load(folder, adata=human, context_model=context)
        recorded = json.loads((folder / "train.json").read_text())
        rec.result["fit_s"] = recorded["context_train_s"]
        rec.result["query_s"] = round(rec.result["query_s"] + recorded["target_train_s"], 3)
        rec.result["fit_from_cache"] = str(folder)
        rec.result["loadavg"]["fit"] = "not recorded (cached models)"
    else:
        with rec.timed("fit"):
            context = speciesvi.ContextVI(mouse)
            context.train(**train)
        with rec.timed("query"):
            target = speciesvi.TargetVI(human, context)
            target.train(**train)
        target.save(args.out / "models", overwrite=True)
        rec.result["fit_from_cache"] = False
    warm_up(target)
    with rec.timed("predict", "transfer"):
        result = target.transfer_labels()
    rec.add("transfer", human.obs_names, result["label"].astype(str).to_numpy(), result["confidence"].to_numpy())
    with rec.timed("predict", "transfer_all"):
        every = target.transfer_labels(unassigned_threshold=None, key_added="speciesvi_all")
    rec.add("transfer_all", human.obs_names, every["label"].astype(str).to_numpy(), every["confidence"].to_numpy())
    votes = human.obs["homolog_neighbors_label"].astype(str).to_numpy()
    rec.add("data_level", human.obs_names, votes)
    rec.result["predict_s"]["data_level"] = 0.0  # part of homolog_neighbors (query)
    rec.result["params"] = {
        "epochs_context": args.epochs,
        "epochs_target": args.epochs,
        "unassigned_threshold": 0.5,
        "n_genes_context": int(mouse.n_vars),
        "n_genes_target": int(human.n_vars),
        "torch_threads": torch.get_num_threads(),
    }
    rec.result["loadavg"]["end"] = loadavg()
    rec.write(versions=versions("speciesvi", "scvi-tools", "torch", "numba", "pynndescent"))


if __name__ == "__main__":
    main()
