"""Peer: scVI + scANVI on the mouse homologous genes, scArches query mapping of the human cells.

Runs in the main environment (scvi-tools). The reference is the mouse data restricted to the homologous
genes (human genes carry their mouse symbols): ``SCVI`` with the scArches-ready architecture recommended in
the scvi-tools reference-mapping tutorial (``n_layers=2``, ``encode_covariates=True``, layer norm instead of
batch norm, ``dropout_rate=0.2``) and ``donor`` batches is trained for ``--epochs`` epochs, then
``SCANVI.from_scvi_model`` for ``--epochs`` epochs with the mouse labels. The human cells (all labels set to
the unlabelled category, so no human label is seen) are mapped with ``SCANVI.load_query_data`` (new donor
batches, reference weights frozen) and trained for ``--epochs`` epochs with ``weight_decay=0``, as in that
tutorial; the label is the argmax of ``predict(soft=True)`` and the confidence its probability. scANVI has
no "Unassigned" label.

    python benchmarks/peers/scanvi_peer.py --context mouse.h5ad --target human.h5ad --out DIR [--accelerator gpu]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peer_io import Recorder, parser, versions

UNLABELLED = "Unknown"
ARCHES = {
    "n_layers": 2,
    "encode_covariates": True,
    "use_layer_norm": "both",
    "use_batch_norm": "none",
    "dropout_rate": 0.2,
}


def main(argv=None) -> None:
    """Fit on the context, map and predict the target, write the result files."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import anndata as ad
    import scvi

    scvi.settings.seed = args.seed
    scvi.settings.verbosity = 30
    context, target = ad.read_h5ad(args.context), ad.read_h5ad(args.target)
    target.obs[args.labels_key] = UNLABELLED
    train = {"accelerator": args.accelerator, "enable_progress_bar": False}
    rec = Recorder(args, "scanvi")
    rec.result["params"] = {
        **ARCHES,
        "epochs_scvi": args.epochs,
        "epochs_scanvi": args.epochs,
        "epochs_query": args.epochs,
    }
    with rec.timed("fit"):
        scvi.model.SCVI.setup_anndata(context, batch_key=args.batch_key, labels_key=args.labels_key)
        vae = scvi.model.SCVI(context, **ARCHES)
        vae.train(max_epochs=args.epochs, **train)
        reference = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=UNLABELLED, labels_key=args.labels_key)
        reference.train(max_epochs=args.epochs, **train)
    with rec.timed("query"):
        scvi.model.SCANVI.prepare_query_anndata(target, reference)
        query = scvi.model.SCANVI.load_query_data(target, reference)
        query.train(max_epochs=args.epochs, plan_kwargs={"weight_decay": 0.0}, **train)
    with rec.timed("predict", "scanvi"):
        probabilities = query.predict(soft=True)
    probabilities = probabilities.drop(columns=[UNLABELLED], errors="ignore")
    rec.add("scanvi", target.obs_names, probabilities.idxmax(axis=1).to_numpy(), probabilities.max(axis=1).to_numpy())
    rec.write(versions=versions("scvi-tools", "torch", "anndata"))


if __name__ == "__main__":
    main()
