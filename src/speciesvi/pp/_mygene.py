"""Homologs from MyGene.info (HomoloGene groups) through the ``mygene`` client, batched, retried and cached.

Any pair of NCBI taxa can be queried, but HomoloGene (last build 68, 2014) groups the genes of 21 species only
(:data:`HOMOLOGENE_TAXA`); for other taxa, e.g. the golden hamster (10036), MyGene.info knows the genes but no
homologs, and :func:`mygene_homology` says so and names the table files that work instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._homology_tidy import TIDY_COLUMNS

if TYPE_CHECKING:
    from ._species import Species

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
MAX_ATTEMPTS = 3
RETRY_WAIT_S = 2.0

#: NCBI taxon ids of the 21 species of HomoloGene build 68: human, chimpanzee, macaque, dog, cow, mouse, rat,
#: chicken, frog (X. tropicalis), zebrafish, fruit fly, mosquito (A. gambiae), worm, budding and fission yeast,
#: K. lactis, E. gossypii, M. oryzae, N. crassa, A. thaliana and rice.
HOMOLOGENE_TAXA = frozenset(
    {9606, 9598, 9544, 9615, 9913, 10090, 10116, 9031, 8364, 7955, 7227, 7165, 6239, 4932, 4896}
    | {28985, 33169, 318829, 5141, 3702, 4530}
)

TABLE_FILES_HINT = (
    "pass a homology table file as source= instead: an Ensembl BioMart export, an OrthoFinder "
    "Orthologues_<A>__v__<B>.tsv file, two eggNOG-mapper .emapper.annotations files as (target, context), an HCOP "
    "export or the MGI HOM_AllOrganism.rpt report"
)


def _mygene_client() -> Any:
    """A ``mygene.MyGeneInfo`` client (tests substitute this object)."""
    try:
        import mygene
    except ImportError as err:
        raise ImportError(
            "source='mygene' needs the optional 'mygene' package: pip install 'speciesvi[mygene]'."
        ) from err
    return mygene.MyGeneInfo()


def _retryable_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        import requests

        errors.append(requests.RequestException)
    except ImportError:  # pragma: no cover - requests ships with scanpy's dependencies
        pass
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover - only newer biothings clients use httpx
        pass
    return tuple(errors)


def _with_retries(call: Callable[[], list[dict]], what: str) -> list[dict]:
    errors = _retryable_errors()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return call()
        except errors as err:
            if attempt == MAX_ATTEMPTS:
                raise ConnectionError(
                    f"MyGene.info did not answer {what} after {MAX_ATTEMPTS} attempts ({err}). Without network, "
                    f"{TABLE_FILES_HINT}, or use source='offline' (human/mouse). Answers received once are cached "
                    "and reused offline."
                ) from err
            wait = RETRY_WAIT_S * 2 ** (attempt - 1)
            logger.warning("MyGene.info %s failed (%s); retrying in %.0f s", what, err, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _querymany(client: Any, terms: Sequence[str], what: str, **kwargs: Any) -> list[dict]:
    hits: list[dict] = []
    n_batches = (len(terms) + BATCH_SIZE - 1) // BATCH_SIZE
    for i, batch in enumerate(_batches(list(terms), BATCH_SIZE), start=1):
        logger.info("MyGene.info %s: batch %d/%d (%d terms)", what, i, n_batches, len(batch))
        result = _with_retries(lambda batch=batch: client.querymany(list(batch), verbose=False, **kwargs), what)
        hits.extend(h for h in result if isinstance(h, dict) and not h.get("notfound"))
    return hits


def cache_path(genes: Sequence[str], target: Species, context: Species, cache_dir: Path) -> Path:
    """Cache file of one query: the two taxa and a digest of the (deduplicated, sorted) gene symbols."""
    digest = hashlib.sha256("\n".join(sorted(genes)).encode()).hexdigest()[:16]
    return cache_dir / f"mygene_{target.taxid}_to_{context.taxid}_{digest}.tsv"


def _write_atomically(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        table.to_csv(tmp_name, sep="\t", index=False)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _no_homologs_error(target: Species, context: Species, n_symbols: int, n_found: int) -> ValueError:
    outside = [f"{sp.name} ({sp.taxid})" for sp in (target, context) if sp.taxid not in HOMOLOGENE_TAXA]
    why = (
        f"HomoloGene, the homology MyGene.info serves, has no genes of {' or '.join(outside)}: it covers 21 "
        "species (human, chimpanzee, macaque, dog, cow, mouse, rat, chicken, frog, zebrafish, fly, mosquito, "
        "worm, yeasts, Arabidopsis, rice)"
        if outside
        else "none of them is in a HomoloGene group with a context gene"
    )
    return ValueError(
        f"MyGene.info found {n_found} of {n_symbols} {target.name} symbols but no {context.name} homolog: {why}. "
        f"For this species pair, {TABLE_FILES_HINT}."
    )


def mygene_homology(
    genes: Iterable[str],
    target: Species,
    context: Species,
    client: Any = None,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Query MyGene.info for the HomoloGene groups of ``genes`` (target symbols) and return the tidy table.

    The homology type of a pair follows the numbers of target and context genes in its HomoloGene group.
    Only hits whose official symbol equals the query exactly are used (MyGene.info matches case-insensitively).
    With ``cache_dir``, the table is written there once received and read back, without network, when the same
    genes are asked for again.

    Raises
    ------
    ValueError
        No homolog at all: HomoloGene does not cover one of the taxa, or none of the genes has a homolog.
    ConnectionError
        MyGene.info did not answer after :data:`MAX_ATTEMPTS` attempts.

    Examples
    --------
    >>> import speciesvi
    >>> table = speciesvi.pp.homology_table(  # doctest: +SKIP
    ...     9031, "mouse", source="mygene", genes=["GCG", "INS"]
    ... )
    """
    symbols = list(dict.fromkeys(str(g) for g in genes if isinstance(g, str) and g))
    path = cache_path(symbols, target, context, Path(cache_dir).expanduser()) if cache_dir is not None else None
    if path is not None and path.is_file():
        logger.info("MyGene.info: reusing the cached answer %s", path)
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        return table.assign(score=pd.to_numeric(table["score"], errors="coerce"))
    if target.taxid not in HOMOLOGENE_TAXA or context.taxid not in HOMOLOGENE_TAXA:
        logger.warning(
            "HomoloGene (MyGene.info) covers 21 species; %s -> %s is likely to get no homologs",
            target.name,
            context.name,
        )
    client = _mygene_client() if client is None else client
    table = _query(client, symbols, target, context)
    if path is not None:
        _write_atomically(table, path)
        logger.info("MyGene.info: answer cached in %s", path)
    return table


def _query(client: Any, symbols: list[str], target: Species, context: Species) -> pd.DataFrame:
    hits = _querymany(
        client, symbols, "symbol lookup", scopes="symbol", fields="symbol,homologene", species=target.taxid
    )
    rows = []
    for hit in hits:
        group = hit.get("homologene")
        if hit.get("symbol") != hit.get("query") or not isinstance(group, dict):
            continue
        members = [tuple(m) for m in group.get("genes", []) if isinstance(m, list | tuple) and len(m) == 2]
        n_target = sum(int(taxid) == target.taxid for taxid, _ in members)
        context_ids = [str(gene_id) for taxid, gene_id in members if int(taxid) == context.taxid]
        for gene_id in context_ids:
            rows.append((hit["query"], gene_id, max(n_target, 1), len(context_ids)))
    logger.info(
        "MyGene.info: %d of %d symbols have %s homologs in HomoloGene",
        len({r[0] for r in rows}),
        len(symbols),
        context.name,
    )
    if not rows:
        found = len({h.get("query") for h in hits if h.get("symbol") == h.get("query")})
        raise _no_homologs_error(target, context, len(symbols), found)
    pairs = pd.DataFrame(rows, columns=["target_gene", "entrez", "n_target", "n_context"])
    ids = list(dict.fromkeys(pairs["entrez"]))
    id_hits = _querymany(client, ids, "id lookup", scopes="entrezgene", fields="symbol", species=context.taxid)
    id_to_symbol = {str(h.get("query")): h["symbol"] for h in id_hits if h.get("symbol")}
    pairs["context_gene"] = pairs["entrez"].map(id_to_symbol)
    pairs = pairs.dropna(subset=["context_gene"])
    one_t, one_c = pairs["n_target"] == 1, pairs["n_context"] == 1
    pairs["homology_type"] = "one2many"
    pairs.loc[one_t & one_c, "homology_type"] = "one2one"
    pairs.loc[~one_t & ~one_c, "homology_type"] = "many2many"
    pairs["score"] = float("nan")
    out = pairs[list(TIDY_COLUMNS)].drop_duplicates(subset=["target_gene", "context_gene"])
    return out.reset_index(drop=True)
