"""Outputs of every public likelihood function on seeded inputs, and the report of ``bench_likelihood_core.py``.

``dump`` runs against whichever speciesvi is first on ``PYTHONPATH``; functions or options that one version
lacks (the numba backend after it was removed) are skipped there and reported as such.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

RESULTS = Path(__file__).resolve().parent / "results"
MODES = list(itertools.product(("nb", "zinb"), ("gene", "gene-batch", "gene-cell")))


def _decoder(gene_likelihood: str, dispersion: str, n_genes: int, n_batch: int = 3):
    from speciesvi.module import ExpressionDecoder

    torch.manual_seed(0)
    decoder = ExpressionDecoder(8, n_genes, n_batch, dims=(32,), dispersion=dispersion, gene_likelihood=gene_likelihood)
    with torch.no_grad():  # spread the expression, dispersions and zero inflation over realistic ranges
        decoder.logits.weight.mul_(4.0)
        if dispersion == "gene-cell":
            decoder.log_theta_head.weight.mul_(3.0)
        else:
            decoder.log_theta.normal_(0.0, 1.5)
        if decoder.zi_logits is not None:
            decoder.zi_logits.weight.mul_(4.0)
    return decoder.eval()


def _counts(n_cells: int, n_genes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_library = rng.uniform(6.0, 9.5, n_cells)
    expression = np.exp(rng.normal(0.0, 2.0, (n_cells, n_genes)))
    mu = expression / expression.sum(1, keepdims=True) * np.exp(log_library)[:, None]
    x = rng.poisson(rng.gamma(0.7, mu / 0.7)).astype(np.float32)
    return x, np.log(x.sum(1) + 1.0).astype(np.float32)


def _try(out: dict, key: str, fn, *args, **kwargs) -> None:
    try:
        value = fn(*args, **kwargs)
    except (TypeError, ValueError, ImportError, AttributeError) as error:
        out[f"skipped:{key}"] = np.array(str(error))
        return
    out[key] = np.asarray(value.detach().double() if torch.is_tensor(value) else value)


def _kernels(out: dict) -> None:
    from speciesvi.module import _similarity as sim

    n_cells, n_genes, n_codes, k = 200, 300, 60, 20
    x, log_library = _counts(n_cells, n_genes)
    counts = sim.CountsCSR.from_scipy(sparse.csr_matrix(x))
    rng = np.random.default_rng(1)
    candidates = torch.as_tensor(rng.integers(0, n_codes, (n_cells, k)))
    batches = torch.as_tensor(rng.integers(0, 3, n_cells))
    torch.manual_seed(1)
    z = torch.randn(n_codes, 8)
    for (likelihood, dispersion), dense, backend in itertools.product(
        MODES, ("grid", "exact", "auto"), ("default", "torch", "numba")
    ):
        decoder = _decoder(likelihood, dispersion, n_genes)
        options = {"dense": dense} if backend == "default" else {"dense": dense, "backend": backend}
        args = (decoder, z, candidates, counts, batches, torch.as_tensor(log_library))
        key = f"{likelihood}/{dispersion}/{dense}/{backend}"
        _try(out, f"candidate/{key}", sim.candidate_log_likelihood, *args, **options)
        # a few candidates per chunk and small sparse batches: the chunking paths
        _try(
            out,
            f"candidate_chunked/{key}",
            sim.candidate_log_likelihood,
            *args,
            chunk_size=7,
            max_elements=2000,
            **options,
        )
    for likelihood, dispersion in MODES:
        decoder = _decoder(likelihood, dispersion, n_genes)
        inputs = (decoder, z[candidates[:, 0]], torch.as_tensor(x), batches, torch.as_tensor(log_library))
        _try(out, f"reference/{likelihood}/{dispersion}", sim.reference_log_likelihood, *inputs)
    profiles = torch.log_softmax(torch.randn(n_codes, n_genes) * 2, dim=-1)
    for backend in ("default", "torch", "numba"):
        options = {} if backend == "default" else {"backend": backend}
        _try(
            out,
            f"profile/{backend}",
            sim.profile_log_likelihood,
            profiles.__getitem__,
            candidates,
            counts,
            n_codes,
            chunk_size=9,
            **options,
        )


def _selection(out: dict) -> None:
    from speciesvi.module import _selection as sel

    n_cells, k, n_genes = 24, 25, 300
    x, log_library = _counts(n_cells, n_genes, seed=2)
    x = torch.as_tensor(x)
    batch = torch.as_tensor(np.random.default_rng(3).integers(0, 3, (n_cells, 1)))
    for likelihood, dispersion in MODES:
        decoder = _decoder(likelihood, dispersion, n_genes)
        torch.manual_seed(2)
        z = torch.randn(n_cells * k, 8)
        with torch.no_grad():
            hidden = decoder.hidden(z, batch.repeat_interleave(k, 0)).view(n_cells, k, -1)
            lib = torch.as_tensor(log_library).reshape(-1, 1)
            _try(
                out, f"score_candidates/{likelihood}/{dispersion}", sel.score_candidates, decoder, hidden, batch, lib, x
            )


def _losses(out: dict) -> None:
    from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

    from speciesvi.module import _likelihood as lik

    try:  # the training loss moved to module/_loss.py with the likelihood core
        from speciesvi.module._loss import decoder_log_prob_sum
    except ImportError:
        decoder_log_prob_sum = lik.decoder_log_prob_sum

    generator = torch.Generator().manual_seed(4)
    n_cells, n_genes = 64, 300
    x, log_library = _counts(n_cells, n_genes, seed=4)
    x[0, :10] = 5000.0  # large counts
    x[1] = 0.0  # an empty cell
    x = torch.as_tensor(x)
    logits = torch.randn(n_cells, n_genes, generator=generator) * 3
    log_theta = torch.randn(n_genes, generator=generator) * 2.5 - 1.0  # theta down to ~1e-4
    zi_logits = torch.randn(n_cells, n_genes, generator=generator) * 3
    zi_logits[2] = 40.0  # extreme zero-inflation logits
    zi_logits[3] = -40.0
    mu = torch.softmax(logits, -1) * torch.as_tensor(log_library).exp().unsqueeze(1)
    theta = log_theta.exp().expand_as(mu)
    for count_terms in (True, False):
        nb, zinb = (
            NegativeBinomial(mu=mu, theta=theta),
            ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi_logits),
        )
        for name, px in (("nb", nb), ("zinb", zinb)):
            _try(
                out, f"count_log_prob_sum/{name}/{count_terms}", lik.count_log_prob_sum, px, x, count_terms=count_terms
            )
    out["scvi/nb"] = NegativeBinomial(mu=mu, theta=theta).log_prob(x).sum(-1).double().numpy()
    out["scvi/zinb"] = (
        ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi_logits).log_prob(x).sum(-1).double().numpy()
    )
    library = torch.as_tensor(log_library).reshape(-1, 1)
    for zinb, per_cell in itertools.product((False, True), (False, True)):
        leaves = [logits.clone(), library.clone(), (log_theta.expand(n_cells, -1) if per_cell else log_theta).clone()]
        leaves += [zi_logits.clone()] if zinb else []
        for leaf in leaves:
            leaf.requires_grad_()
        name = f"{'zinb' if zinb else 'nb'}/{'cell-gene' if per_cell else 'gene'}"
        value = decoder_log_prob_sum(leaves[0], leaves[1], leaves[2], x, leaves[3] if zinb else None)
        value.sum().backward()
        out[f"decoder_log_prob_sum/{name}"] = value.detach().double().numpy()
        for part, leaf in zip(("logits", "log_library", "log_theta", "zi_logits"), leaves, strict=False):
            out[f"decoder_log_prob_sum_grad/{name}/{part}"] = leaf.grad.double().numpy()


def dump(path: Path) -> None:
    """Write the outputs of every likelihood function to ``path`` (``.npz``)."""
    torch.set_num_threads(1)  # results independent of threading
    out: dict = {}
    _kernels(out)
    _selection(out)
    _losses(out)
    np.savez(path, **out)
    print(
        f"{sum(not k.startswith('skipped') for k in out)} outputs, {sum(k.startswith('skipped') for k in out)} skipped"
    )


def compare(before: Path, after: Path) -> dict:
    """Largest absolute and relative difference of every output both files hold."""
    a, b = np.load(before), np.load(after)
    table = {}
    for key in sorted(set(a.files) & set(b.files)):
        if key.startswith("skipped"):
            continue
        x, y = a[key], b[key]
        finite = np.isfinite(x) & np.isfinite(y)
        same_inf = bool(np.array_equal(np.isfinite(x), np.isfinite(y)))
        diff = np.abs(x - y)[finite]
        scale = np.abs(x)[finite]
        table[key] = {
            "max_abs": float(diff.max()) if diff.size else 0.0,
            "max_rel": float((diff / np.maximum(scale, 1.0)).max()) if diff.size else 0.0,
            "same_non_finite": same_inf,
        }
    return {
        "compared": table,
        "only_before": sorted(set(a.files) - set(b.files)),
        "only_after": sorted(set(b.files) - set(a.files)),
    }


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _kernel_rows(work: Path) -> tuple[list[str], dict]:
    """Timing table of the kernel runs (the last run of every tag) and the differences of their outputs."""
    records = _records(work / "times.jsonl")
    runs = {record["tag"]: record for record in records}  # the last run of each tag
    lines = [
        "| code | backend | dense | pairs | time per call (s) | best (s) | counted GFLOP | GFLOP/s (best) | load avg (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in records:
        side = run["tag"].split("_")[0]
        times = ", ".join(f"{t:.1f}" for t in run["seconds"])
        lines.append(
            f"| {side} | {run['backend']} | {run['dense']} | {run['pairs']:,} | {times} | {min(run['seconds']):.1f} | "
            f"{run['gflop']} | {run['gflops_best']} | {run['loadavg'][0]}-{run['loadavg'][1]} |"
        )
    outputs = {tag: np.load(work / f"kernel_{tag}.npy") for tag in runs if (work / f"kernel_{tag}.npy").is_file()}
    pairs = [(f"after_{b}_auto", f"before_{b}_auto") for b in ("numba", "torch")]
    pairs += [(f"{side}_numba_auto", f"{side}_torch_auto") for side in ("before", "after")]
    pairs += [("after_numba_auto", "before_torch_auto")]
    differences = {}
    for one, two in pairs:
        if one in outputs and two in outputs:
            diff = np.abs(outputs[one] - outputs[two])
            differences[f"{one} vs {two}"] = {
                "max_abs": float(diff.max()),
                "max_rel": float((diff / np.maximum(np.abs(outputs[two]), 1.0)).max()),
                "median_abs_value": float(np.median(np.abs(outputs[two]))),
            }
    return lines, {"runs": records, "differences": differences}


def _layout_lines(layout: list[Path], result: dict) -> list[str]:
    """Figures of ``benchmarks/bench_layout.py`` before and after, and the largest differences of its outputs."""
    import pandas as pd

    before, after = layout
    figures = {
        name: json.loads((path / "figures.json").read_text()) for name, path in (("before", before), ("after", after))
    }
    labels = [pd.read_csv(path / "labels.csv", header=[0, 1], index_col=0) for path in layout]
    columns = [c for c in labels[0].columns if c[1] == "label"]

    def max_diff(name: str, **kwargs) -> float:
        one, two = (pd.read_csv(path / name, **kwargs).select_dtypes("number") for path in layout)
        return float(np.nanmax(np.abs(one.to_numpy(float) - two.to_numpy(float))))

    differences = {
        "labels changed": int((labels[0][columns].astype(str) != labels[1][columns].astype(str)).sum().sum()),
        "label scores": float(
            np.nanmax(
                np.abs(
                    labels[0].select_dtypes("number").to_numpy(float)
                    - labels[1].select_dtypes("number").to_numpy(float)
                )
            )
        ),
        "similarities": float(
            np.nanmax(np.abs(np.load(before / "similarity.npy") - np.load(after / "similarity.npy")))
        ),
        "homolog LFC table": max_diff("lfc.csv"),
        "cell-type similarity": max_diff("cell_type_similarity.csv", index_col=0),
    }
    result["figures"] = {"figures": figures, "differences": differences}
    lines = [
        "",
        "## Figures (`benchmarks/bench_layout.py --epochs 40 --seed 0`, demo pair, mouse -> human)",
        "",
        "Trained, transferred and compared from scratch with each version, one after the other.",
        "",
        "| figure | before | after |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {key} | {figures['before'][key]} | {figures['after'].get(key)} |" for key in figures["before"]]
    lines += ["", "| output | largest difference, after vs before |", "| --- | --- |"]
    lines += [f"| {key} | {value:.3g} |" for key, value in differences.items()]
    return lines


def report(before: Path, after: Path, layout: list[Path] | None, work: Path) -> None:
    """Write ``benchmarks/results/likelihood_core.{json,md}`` from the saved timings and outputs."""
    kernel_lines, kernel = _kernel_rows(work)
    steps = _records(work / "steps.jsonl")
    dumps = compare(before, after)
    groups: dict[str, dict] = {}
    for key, value in dumps["compared"].items():
        group = groups.setdefault(
            key.split("/")[0], {"outputs": 0, "max_abs": 0.0, "max_rel": 0.0, "same_non_finite": True}
        )
        group["outputs"] += 1
        group["max_abs"] = max(group["max_abs"], value["max_abs"])
        group["max_rel"] = max(group["max_rel"], value["max_rel"])
        group["same_non_finite"] &= value["same_non_finite"]
    result = {"kernel": kernel, "steps": steps, "functions": groups, "functions_detail": dumps}
    lines = [
        "# The NB/ZINB likelihood core (issue 20): before and after",
        "",
        "`python benchmarks/bench_likelihood_core.py ...` (see its docstring), run against the code before the change "
        "(commit f9bca48) and after it, side by side on the same inputs and machine (a shared 2-core CPU: the load "
        "average of other jobs is given with every timing).",
        "",
        "## Similarity kernel, 10,000 target x 10,000 context cells",
        "",
        "`candidate_log_likelihood` with the 250 nearest context codes of every target cell (2.5 M pairs), the "
        "seed-0 Baron models of `benchmarks/bench_label_transfer.py`, cells tiled with binomial thinning; "
        "`dense='auto'`; FLOPs counted as `benchmarks/_kernel_flops.py` counts them (decoding included).",
        "",
        *kernel_lines,
        "",
        "| outputs compared | max abs difference (nats) | max relative difference | median abs value (nats) |",
        "| --- | --- | --- | --- |",
    ]
    for name, diff in kernel["differences"].items():
        lines.append(f"| {name} | {diff['max_abs']:.3g} | {diff['max_rel']:.3g} | {diff['median_abs_value']:.4g} |")
    best = {}
    for run in kernel["runs"]:
        key = run["tag"].rsplit("_", 1)[0]
        best[key] = min(best.get(key, float("inf")), *run["seconds"])
    speedups = {
        "numba over torch, before": ("before_torch", "before_numba"),
        "numba over torch, after": ("after_torch", "after_numba"),
        "after over before, numba": ("before_numba", "after_numba"),
        "after over before, torch": ("before_torch", "after_torch"),
    }
    result["kernel_speedups_best"] = {
        name: round(best[slow] / best[fast], 2)
        for name, (slow, fast) in speedups.items()
        if slow in best and fast in best
    }
    ratio = result["kernel_speedups_best"].get("numba over torch, after")
    if ratio is not None:
        verdict = "stays" if ratio > 1.3 else "does not earn its place"
        lines += [
            "",
            f"**Decision:** the numba backend {verdict} (after the change it is {ratio}x as fast as torch "
            "on this CPU; the bar was 1.3x).",
        ]
    lines += [
        "",
        "Speed-ups from the best call of each: "
        + "; ".join(f"{name} {value}x" for name, value in result["kernel_speedups_best"].items())
        + ".",
    ]
    if steps:
        lines += [
            "",
            "## Per-step likelihood costs of training (30 calls each, one torch thread, alternating runs)",
            "",
            "| code | training loss, 128 cells, fwd + bwd: median / best (ms) | "
            "score_candidates, 32 cells x 25: median / best (ms) | load avg |",
            "| --- | --- | --- | --- |",
        ]
        for run in steps:
            lines.append(
                f"| {run['tag']} | {run['training_loss_128_cells_ms']} / {run['training_loss_128_cells_best_ms']} | "
                f"{run['score_candidates_32x25_ms']} / {run['score_candidates_32x25_best_ms']} | "
                f"{run['loadavg'][0]}-{run['loadavg'][1]} |"
            )
    lines += [
        "",
        "## Every likelihood function, all modes (seeded random inputs)",
        "",
        "NB/ZINB x gene/gene-batch/gene-cell dispersion x grid/exact/auto dense part x backend; profile, reference, "
        "score_candidates, count_log_prob_sum (hard inputs: large counts, an empty cell, zero-inflation logits of "
        "+-40), the training loss and its gradients. Largest difference after vs before per function:",
        "",
        "| function | outputs | max abs difference | max relative difference | same non-finite entries |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, group in groups.items():
        lines.append(
            f"| {name} | {group['outputs']} | {group['max_abs']:.3g} | {group['max_rel']:.3g} | {group['same_non_finite']} |"
        )
    if dumps["only_before"] or dumps["only_after"]:
        lines += ["", f"Outputs only before: {len(dumps['only_before'])}; only after: {len(dumps['only_after'])}."]
    if layout:
        lines += _layout_lines(layout, result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "likelihood_core.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "likelihood_core.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
