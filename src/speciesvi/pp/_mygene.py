"""Homologs from MyGene.info (HomoloGene groups) through the ``mygene`` client, batched and retried."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._homology_formats import TIDY_COLUMNS

if TYPE_CHECKING:
    from ._species import Species

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
MAX_ATTEMPTS = 3
RETRY_WAIT_S = 2.0


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
                    "use source='offline' (human/mouse) or a homology file."
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


def mygene_homology(genes: Iterable[str], target: Species, context: Species, client: Any = None) -> pd.DataFrame:
    """Query MyGene.info for the HomoloGene groups of ``genes`` (target symbols) and return the tidy table.

    The homology type of a pair follows the numbers of target and context genes in its HomoloGene group.
    Only hits whose official symbol equals the query exactly are used (MyGene.info matches case-insensitively).
    """
    client = _mygene_client() if client is None else client
    symbols = list(dict.fromkeys(str(g) for g in genes if isinstance(g, str) and g))
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
        return pd.DataFrame(columns=list(TIDY_COLUMNS))
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
