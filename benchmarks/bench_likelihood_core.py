"""The NB/ZINB likelihood core (issue 20): kernel timings before and after, numba against torch, and outputs.

    python benchmarks/bench_likelihood_core.py prepare --models DIR [--cells 10000] [--seed 0]
    python benchmarks/bench_likelihood_core.py time --tag NAME [--backend auto] [--dense auto] [--repeats 3]
    python benchmarks/bench_likelihood_core.py steps --tag NAME [--repeats 30]
    python benchmarks/bench_likelihood_core.py dump --out FILE.npz
    python benchmarks/bench_likelihood_core.py report --before FILE.npz --after FILE.npz [--layout BEFORE AFTER]

Every subcommand but ``prepare`` and ``report`` runs against whichever speciesvi is first on ``PYTHONPATH``,
so one checkout of the code before a change and one after can be measured side by side on the same inputs:

* ``prepare``: the similarity kernel's inputs at ``--cells`` target x ``--cells`` context cells, from the
  40 + 40-epoch models of ``benchmarks/bench_label_transfer.py`` in ``--models``: the Baron human cells tiled
  with binomial thinning (as ``benchmarks/bench_label_transfer_scale.py``), their latent means jittered, the
  context latent means tiled and jittered, and the 250 nearest context codes of every cell (exact search).
  Saved to ``benchmarks/.work/likelihood_core/inputs.pt`` (the target decoder included).
* ``time``: ``candidate_log_likelihood`` on those inputs; wall time of each call, achieved FLOP/s (counted as
  ``benchmarks/_kernel_flops.py`` counts them) and the output of the first call, saved under ``--tag``.
* ``steps``: the two per-step likelihood costs of training on the same models: the closed-form training loss
  (``decoder_log_prob_sum``, forward and backward, 128 cells) and the alignment's candidate scoring
  (``score_candidates``, 32 cells x 25 candidates).
* ``dump``: every public likelihood function on seeded random inputs in every mode (NB/ZINB, the three
  dispersions, grid/exact dense part, torch/numba backend where offered), to compare two checkouts.
* ``report``: writes ``benchmarks/results/likelihood_core.{json,md}`` from the saved timings and outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
WORK = BENCH / ".work" / "likelihood_core"
RESULTS = BENCH / "results"
K = 250
KEEP = 0.9
JITTER = 0.05


def prepare(models: Path, n_cells: int, seed: int) -> None:
    """Tile the seed's Baron models' inputs to ``n_cells`` x ``n_cells`` and save them."""
    from bench_label_transfer import BATCH, LABELS, load_pair

    import speciesvi

    mouse, human = load_pair()
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key=LABELS)
    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH, labels_key=LABELS)
    speciesvi.TargetVI.setup_anndata(human, batch_key=BATCH)
    context = speciesvi.ContextVI.load(str(models / "context"), adata=mouse)
    target = speciesvi.TargetVI.load(models, adata=human, context_model=context)
    cells = target._target_cells(np.arange(human.n_obs), None)
    context_z = target._context_latent()
    rng = np.random.default_rng(seed)
    rows = rng.choice(human.n_obs, n_cells, replace=True)
    counts = sparse.csr_matrix(
        (cells.counts.data.numpy(), cells.counts.indices.numpy(), cells.counts.indptr.numpy()),
        shape=(human.n_obs, cells.counts.n_genes),
    )[rows]
    counts.data = rng.binomial(counts.data.astype(np.int64), KEEP).astype(np.float32)
    counts.eliminate_zeros()
    z = torch.as_tensor(cells.z[rows] + rng.normal(0, JITTER, (n_cells, cells.z.shape[1])), dtype=torch.float32)
    context_rows = rng.choice(context_z.shape[0], n_cells, replace=True)
    z_codes = torch.as_tensor(context_z[context_rows] + rng.normal(0, JITTER, (n_cells, context_z.shape[1])))
    z_codes = z_codes.float()
    candidates = torch.cat(
        [torch.cdist(part, z_codes).topk(K, largest=False).indices for part in z.split(1000)]
    )  # exact search
    WORK.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "decoder": target.module.decoder.eval(),
            "z_codes": z_codes,
            "candidates": candidates,
            "counts": (torch.as_tensor(counts.indptr), torch.as_tensor(counts.indices), torch.as_tensor(counts.data)),
            "n_genes": int(counts.shape[1]),
            "batch_index": torch.as_tensor(cells.batches[rows]),
            "log_library": torch.as_tensor(cells.log_library[rows] + np.log(KEEP), dtype=torch.float32),
            "own_z": z,
            "models": str(models),
            "seed": seed,
        },
        WORK / "inputs.pt",
    )
    print(f"saved {n_cells} x {n_cells} cells, {counts.nnz / n_cells:.0f} non-zero counts per cell")


def _inputs():
    from speciesvi.module._similarity import CountsCSR

    saved = torch.load(WORK / "inputs.pt", weights_only=False)
    indptr, indices, data = saved["counts"]
    counts = CountsCSR(indptr.long(), indices.long(), data.float(), saved["n_genes"])
    return saved, counts


def _counted_flops(saved: dict, counts, dense: str) -> float:
    """FLOPs of one kernel call, counted from the shapes as ``benchmarks/_kernel_flops.py`` counts them."""
    from _kernel_flops import OPS, decoder_flops

    decoder, candidates, batches = saved["decoder"], saved["candidates"], saved["batch_index"]
    n_cells, k = candidates.shape
    zinb = decoder.zi_logits is not None
    n_genes = counts.n_genes
    codes = candidates.numpy().astype(np.int64) * (int(batches.max()) + 1) + batches.numpy()[:, None]
    n_unique = int(np.unique(codes).size)
    dense_op = OPS["dense_zinb" if zinb else "dense_nb"]
    sparse_part = int(counts.row_lengths().sum()) * k * OPS["sparse_zinb" if zinb else "sparse_nb"]
    decode = n_unique * decoder_flops(decoder)
    if dense == "exact":
        return decode + n_cells * k * n_genes * dense_op + sparse_part
    return decode + n_unique * 8 * n_genes * (dense_op + OPS["slope"]) + n_cells * k * OPS["hermite"] + sparse_part


def time_kernel(tag: str, backend: str, dense: str, repeats: int) -> None:
    """Time ``candidate_log_likelihood`` on the prepared inputs; save the timings and the first output."""
    import speciesvi
    from speciesvi.module._similarity import candidate_log_likelihood

    saved, counts = _inputs()
    args = (saved["decoder"], saved["z_codes"], saved["candidates"], counts, saved["batch_index"])
    small = saved["candidates"][:64]
    small_counts = type(counts)(counts.indptr[:65], counts.indices, counts.data, counts.n_genes)
    kwargs = {"dense": dense} if backend == "default" else {"dense": dense, "backend": backend}
    for mode in ("grid", "exact"):  # compile (numba) or warm up every path outside the timed calls
        warm = {**kwargs, "dense": mode}
        candidate_log_likelihood(*args[:2], small, small_counts, args[4][:64], saved["log_library"][:64], **warm)
    load = [round(os.getloadavg()[0], 2)]
    seconds, output = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = candidate_log_likelihood(*args, saved["log_library"], **kwargs)
        seconds.append(round(time.perf_counter() - start, 3))
        output = result if output is None else output
    load.append(round(os.getloadavg()[0], 2))
    gflop = _counted_flops(saved, counts, dense) / 1e9
    record = {
        "tag": tag,
        "code": str(Path(speciesvi.__file__).parents[2]),
        "backend": backend,
        "dense": dense,
        "pairs": int(saved["candidates"].numel()),
        "seconds": seconds,
        "gflop": round(gflop, 1),
        "gflops_best": round(gflop / min(seconds), 2),
        "torch_threads": torch.get_num_threads(),
        "loadavg": load,
    }
    WORK.mkdir(parents=True, exist_ok=True)
    np.save(WORK / f"kernel_{tag}.npy", output.numpy())
    with open(WORK / "times.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record))


def time_steps(tag: str, repeats: int) -> None:
    """Median time of the training loss (forward + backward) and of the candidate scoring on the Baron decoder."""
    from speciesvi.module._selection import score_candidates

    try:  # the training loss moved to module/_loss.py with the likelihood core
        from speciesvi.module._loss import decoder_log_prob_sum
    except ImportError:
        from speciesvi.module._likelihood import decoder_log_prob_sum

    saved, counts = _inputs()
    decoder = saved["decoder"]
    generator = torch.Generator().manual_seed(0)
    x = torch.as_tensor(
        sparse.csr_matrix((counts.data.numpy(), counts.indices.numpy(), counts.indptr.numpy()))[:128].toarray()
    )
    batch = saved["batch_index"][:128].reshape(-1, 1)
    log_library = saved["log_library"][:128].reshape(-1, 1)
    with torch.no_grad():
        outputs = decoder.outputs(saved["own_z"][:128], batch)
        z = saved["z_codes"][torch.randint(0, saved["z_codes"].shape[0], (32 * 25,), generator=generator)]
        hidden = decoder.hidden(z, batch[:32].repeat_interleave(25, 0)).view(32, 25, -1)

    def loss_step():
        logits = outputs.logits.clone().requires_grad_()
        log_theta = outputs.log_theta.clone().requires_grad_()
        zi = None if outputs.zi_logits is None else outputs.zi_logits.clone().requires_grad_()
        decoder_log_prob_sum(logits, log_library, log_theta, x, zi).sum().backward()

    def selection_step():
        with torch.no_grad():
            return score_candidates(decoder, hidden, batch[:32], log_library[:32], x[:32])

    record = {"tag": tag, "torch_threads": torch.get_num_threads(), "loadavg": [round(os.getloadavg()[0], 2)]}
    for name, step in (("training_loss_128_cells_ms", loss_step), ("score_candidates_32x25_ms", selection_step)):
        step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        record[name] = round(1e3 * float(np.median(times)), 2)
        record[name.replace("_ms", "_best_ms")] = round(1e3 * min(times), 2)
    record["loadavg"].append(round(os.getloadavg()[0], 2))
    with open(WORK / "steps.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    from _likelihood_core_dump import dump, report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--cells", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("time")
    p.add_argument("--tag", required=True)
    p.add_argument("--backend", default="default")
    p.add_argument("--dense", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("steps")
    p.add_argument("--tag", required=True)
    p.add_argument("--repeats", type=int, default=30)
    p = sub.add_parser("dump")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("report")
    p.add_argument("--before", type=Path, required=True)
    p.add_argument("--after", type=Path, required=True)
    p.add_argument("--layout", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.models, args.cells, args.seed)
    elif args.command == "time":
        time_kernel(args.tag, args.backend, args.dense, args.repeats)
    elif args.command == "steps":
        time_steps(args.tag, args.repeats)
    elif args.command == "dump":
        dump(args.out)
    else:
        report(args.before, args.after, args.layout, WORK)
