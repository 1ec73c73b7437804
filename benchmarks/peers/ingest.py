"""Peer: scanpy ``tl.ingest`` on the homologous genes (main environment).

The context (mouse) is processed as in scanpy's integration tutorial: counts normalised to 10,000 per cell,
log1p, PCA with 50 components, a 15-neighbour graph; then the target cells (same genes, log-normalised alike)
are projected onto the context PCA and take the label of their neighbours (``sc.tl.ingest``, PCA embedding).
All parameters are scanpy defaults. ingest has neither a confidence nor an "Unassigned" label.

Variants: ``ingest`` (all homologous genes, as above) and ``ingest_hvg``, the gene selection of scanpy's
integration tutorial: the log-normalised context's 2,000 most variable genes
(``sc.pp.highly_variable_genes(n_top_genes=2000, batch_key="donor")``, scanpy's default Seurat flavour; without
the batch key when the batch-aware call fails, as with one-cell batches), both data sets subset to them, then
PCA, neighbours and ``sc.tl.ingest`` as above.

    python benchmarks/peers/ingest.py --context mouse.h5ad --target human.h5ad --out DIR
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peer_io import Recorder, parser, versions

N_TOP_GENES = 2000


def highly_variable(context, batch_key: str, rec: Recorder):
    """The context's ``N_TOP_GENES`` most variable genes (Seurat flavour on log data), batch-aware if possible."""
    import scanpy as sc

    try:
        sc.pp.highly_variable_genes(context, n_top_genes=N_TOP_GENES, batch_key=batch_key)
        rec.result["params"]["hvg"] = {"n_top_genes": N_TOP_GENES, "batch_key": batch_key}
    except Exception as error:  # noqa: BLE001 - scanpy raises assorted errors on tiny batches
        sc.pp.highly_variable_genes(context, n_top_genes=N_TOP_GENES)
        rec.result["params"]["hvg"] = {"n_top_genes": N_TOP_GENES, "batch_key": None, "batch_error": str(error)}
    return context.var["highly_variable"].to_numpy()


def main(argv=None) -> None:
    """Fit on the context, predict the target, write the result files."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import anndata as ad
    import scanpy as sc

    raw_context, raw_target = ad.read_h5ad(args.context), ad.read_h5ad(args.target)
    rec = Recorder(args, "ingest")
    rec.result["params"] = {"n_pcs": 50, "n_neighbors": 15, "embedding_method": "pca", "n_genes": raw_context.n_vars}
    for variant in ("ingest", "ingest_hvg"):
        context, target = raw_context.copy(), raw_target.copy()
        start = time.perf_counter()
        with rec.timed("fit") if variant == "ingest" else nullcontext():  # fit_s: the ``ingest`` variant's
            sc.pp.normalize_total(context, target_sum=1e4)
            sc.pp.log1p(context)
            if variant == "ingest_hvg":
                context = context[:, highly_variable(context, args.batch_key, rec)].copy()
            sc.pp.pca(context, n_comps=min(50, context.n_vars - 1, context.n_obs - 1), random_state=args.seed)
            sc.pp.neighbors(context, n_neighbors=15, random_state=args.seed)
        rec.result.setdefault("fit_s_by_variant", {})[variant] = round(time.perf_counter() - start, 3)
        with rec.timed("predict", variant):
            sc.pp.normalize_total(target, target_sum=1e4)
            sc.pp.log1p(target)
            target = target[:, context.var_names].copy()
            sc.tl.ingest(target, context, obs=args.labels_key, embedding_method="pca")
        rec.add(variant, target.obs_names, target.obs[args.labels_key].astype(str).to_numpy())
    rec.write(versions=versions("scanpy", "pynndescent", "anndata"))


if __name__ == "__main__":
    main()
