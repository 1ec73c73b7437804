"""speciesvi for the robustness suite: every step on the case's own files, trained in this process, timed.

Runs in the main environment. Reads ``--speciesvi-context`` (raw counts, ``cell_ontology_class``, ``donor``)
and ``--speciesvi-target`` (raw counts, ``donor``, ``var["context_gene"]``, no labels), written by
``benchmarks/_robustness_data.py``; ``--context``/``--target`` (the peers' homologous-gene files) are accepted
for the common command line and not read. Steps, each timed (``steps_s`` in ``result.json``):

1. ``pp.homolog_neighbors(target, context, labels_key=...)`` (defaults; with fewer than 250 context cells, a
   subsampled smoke test, ``n_neighbors`` and ``n_candidates`` are cut to the context size);
2. ``ContextVI.setup_anndata(batch_key, labels_key)``, ``ContextVI(context).train(max_epochs=--epochs)``;
3. ``TargetVI.setup_anndata(batch_key)``, ``TargetVI(target, context_model).train(max_epochs=--epochs)``;
4. ``transfer_labels()`` at its defaults (variant ``transfer``: label, confidence, and ``p_known`` in the
   column ``p_known:transfer``) and ``transfer_labels(unassigned_threshold=None, key_added="speciesvi_all")``
   (variant ``transfer_all``: every cell labelled); ``transfer_labels(keep_data_level=None, ...)`` (variant
   ``similarity_only``: the similarity vote decides every cell, the rule before confident data-level labels
   were kept) and ``transfer_labels(over_clustering="leiden", ...)`` (variant ``majority_voting``: CellTypist's
   majority voting over Leiden clusters of the latent space, every cell labelled);
5. ``latent_knn``: majority label of the 25 nearest context cells of each target cell in the aligned latent
   space (``get_latent_representation()`` against the context latent), confidence = vote share;
6. ``data_level``: ``obs["homolog_neighbors_label"]`` of step 1;
7. one ``homolog_lfc`` call at its defaults (50,000 draws) for one cell type, the most frequent label of
   step 4 that the context holds: its wall time only (a failure is recorded in ``lfc``, the labels are kept).

    python benchmarks/peers/speciesvi_robust.py --context C.h5ad --target T.h5ad --out DIR \
        --speciesvi-context SC.h5ad --speciesvi-target ST.h5ad [--seed 0] [--epochs 40]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _peer_io import Recorder, loadavg, parser, versions  # noqa: E402

N_NEIGHBORS = 250  # the defaults of pp.homolog_neighbors and transfer_labels
K_LATENT = 25


def main(argv=None) -> None:
    """Run every step on one case and write the result files."""
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--speciesvi-context", required=True, type=Path, help="context .h5ad of the case (all its genes)")
    p.add_argument("--speciesvi-target", required=True, type=Path, help="target .h5ad of the case (context_gene)")
    p.add_argument("--skip-lfc", action="store_true", help="do not time the homolog LFC call")
    args = p.parse_args(argv)
    import anndata as ad
    import numpy as np
    import scvi
    import torch
    from bench_label_transfer import warm_up

    import speciesvi
    from speciesvi.pp._neighbors import homologous_genes
    from speciesvi.tl._labels import vote
    from speciesvi.tl._similarity import latent_neighbors

    scvi.settings.seed = args.seed
    scvi.settings.verbosity = 30
    context = ad.read_h5ad(args.speciesvi_context)
    target = ad.read_h5ad(args.speciesvi_target)
    lk, bk = args.labels_key, args.batch_key
    rec = Recorder(args, "speciesvi")
    steps: dict[str, float] = {}

    @contextmanager
    def step(name: str, kind: str, variant: str | None = None) -> Iterator[None]:
        start = time.perf_counter()
        with rec.timed(kind, variant):
            yield
        steps[name] = round(time.perf_counter() - start, 3)

    small = {"n_neighbors": context.n_obs} if context.n_obs < N_NEIGHBORS else {}
    candidates = {"n_candidates": context.n_obs} if small else {}
    train = {"max_epochs": args.epochs, "enable_progress_bar": False, "accelerator": args.accelerator}
    with step("homolog_neighbors", "query"):
        speciesvi.pp.homolog_neighbors(target, context, labels_key=lk, **small)
    with step("context_training", "fit"):
        speciesvi.ContextVI.setup_anndata(context, batch_key=bk, labels_key=lk)
        context_model = speciesvi.ContextVI(context)
        context_model.train(**train)
    with step("target_training", "query"):
        speciesvi.TargetVI.setup_anndata(target, batch_key=bk)
        model = speciesvi.TargetVI(target, context_model)
        model.train(**train)
    warm_up(model)  # numba kernels loaded before the timed transfer
    names = target.obs_names
    with step("transfer_labels", "predict", "transfer"):
        result = model.transfer_labels(**candidates)
    rec.add("transfer", names, result["label"].astype(str).to_numpy(), result["confidence"].to_numpy())
    rec.predictions["p_known:transfer"] = result["p_known"].reindex(names).to_numpy(dtype=float)
    with step("transfer_labels_all", "predict", "transfer_all"):
        every = model.transfer_labels(unassigned_threshold=None, key_added="speciesvi_all", **candidates)
    rec.add("transfer_all", names, every["label"].astype(str).to_numpy(), every["confidence"].to_numpy())
    with step("transfer_labels_similarity_only", "predict", "similarity_only"):
        plain = model.transfer_labels(
            unassigned_threshold=None, keep_data_level=None, key_added="speciesvi_similarity", **candidates
        )
    rec.add("similarity_only", names, plain["label"].astype(str).to_numpy(), plain["confidence"].to_numpy())
    with step("transfer_labels_majority_voting", "predict", "majority_voting"):
        voted = model.transfer_labels(
            unassigned_threshold=None, over_clustering="leiden", key_added="speciesvi_voting", **candidates
        )
    rec.add("majority_voting", names, voted["majority_voting"].astype(str).to_numpy(), voted["confidence"].to_numpy())
    with step("latent_knn", "predict", "latent_knn"):
        neighbours = latent_neighbors(model.get_latent_representation(), model._context_latent(), K_LATENT)
        knn_labels, share = vote(model._context_labels(lk)[neighbours])
    rec.add("latent_knn", names, np.asarray(knn_labels, dtype=object).astype(str), share)
    rec.add("data_level", names, target.obs["homolog_neighbors_label"].astype(str).to_numpy())
    rec.result["predict_s"]["data_level"] = 0.0  # part of homolog_neighbors (query)

    known = set(context.obs[lk].dropna().astype(str))
    counts = result["label"].astype(str).value_counts()
    lfc_type = next((t for t in counts.index if t in known), None)
    lfc = {"cell_type": lfc_type}
    if args.skip_lfc:
        lfc["skipped"] = True
    elif lfc_type is not None:
        try:
            start = time.perf_counter()
            frame = model.homolog_lfc(cell_types=lfc_type, progress_bar=False)
            steps["homolog_lfc"] = round(time.perf_counter() - start, 3)
            lfc.update(n_pairs=int(len(frame)), n_samples=int(frame.attrs["params"]["n_samples"]))
        except Exception as error:  # noqa: BLE001 - the labels stay valid; the page reports the failure
            lfc["error"] = f"{type(error).__name__}: {error}"
    t_genes, _ = homologous_genes(target, context)
    used = target.uns["homolog_neighbors_params"]
    rec.result["steps_s"] = steps
    params = target.uns["speciesvi_params"]  # the defaults' run: its anchor check and novelty estimates
    rec.result["anchor_check"] = params["anchor_check"]
    rec.result["n_kept_data_level"] = params["n_kept_data_level"]
    rec.result["novelty_group_scale"] = params["novelty_group_scale"]
    rec.result["homolog_neighbors_s"] = steps["homolog_neighbors"]
    rec.result["lfc"] = lfc
    rec.result["params"] = {
        "epochs_context": args.epochs,
        "epochs_target": args.epochs,
        "unassigned_threshold": 0.5,
        "k_latent": K_LATENT,
        "homolog_neighbors": small or "defaults",
        "transfer_labels": candidates or "defaults",
        "n_cells_context": int(context.n_obs),
        "n_cells_target": int(target.n_obs),
        "n_genes_context": int(context.n_vars),
        "n_genes_target": int(target.n_vars),
        "n_homologous": int(len(t_genes)),
        "n_genes_homolog_neighbors": int(len(used.get("context_genes", []))),
        "torch_threads": torch.get_num_threads(),
    }
    rec.result["loadavg"]["end"] = loadavg()
    rec.write(versions=versions("speciesvi", "scvi-tools", "torch", "numba", "pynndescent"))


if __name__ == "__main__":
    main()
