"""Peer: scanpy ``tl.ingest`` on the homologous genes (main environment).

The context (mouse) is processed as in scanpy's integration tutorial: counts normalised to 10,000 per cell,
log1p, PCA with 50 components, a 15-neighbour graph; then the target cells (same genes, log-normalised alike)
are projected onto the context PCA and take the label of their neighbours (``sc.tl.ingest``, PCA embedding).
All parameters are scanpy defaults. ingest has neither a confidence nor an "Unassigned" label.

    python benchmarks/peers/ingest.py --context mouse.h5ad --target human.h5ad --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peer_io import Recorder, parser, versions


def main(argv=None) -> None:
    """Fit on the context, predict the target, write the result files."""
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import anndata as ad
    import scanpy as sc

    context, target = ad.read_h5ad(args.context), ad.read_h5ad(args.target)
    rec = Recorder(args, "ingest")
    rec.result["params"] = {"n_pcs": 50, "n_neighbors": 15, "embedding_method": "pca", "n_genes": context.n_vars}
    with rec.timed("fit"):
        sc.pp.normalize_total(context, target_sum=1e4)
        sc.pp.log1p(context)
        sc.pp.pca(context, n_comps=50, random_state=args.seed)
        sc.pp.neighbors(context, n_neighbors=15, random_state=args.seed)
    with rec.timed("predict", "ingest"):
        sc.pp.normalize_total(target, target_sum=1e4)
        sc.pp.log1p(target)
        sc.tl.ingest(target, context, obs=args.labels_key, embedding_method="pca")
    rec.add("ingest", target.obs_names, target.obs[args.labels_key].astype(str).to_numpy())
    rec.write(versions=versions("scanpy", "pynndescent", "anndata"))


if __name__ == "__main__":
    main()
