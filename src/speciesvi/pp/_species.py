"""Species names, NCBI taxon ids and the spellings each homology resource uses for them.

Any NCBI taxon id is a species: the registry below only adds names (and the spellings of Ensembl, HCOP and MGI)
to the species speciesvi knows by name. A species outside the registry is called ``"taxon <id>"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Species:
    """One species and its names in the homology resources.

    Parameters
    ----------
    name
        Common name used by speciesvi (``"human"``).
    taxid
        NCBI taxon id (``9606``).
    aliases
        Other accepted spellings: scientific name, Ensembl BioMart dataset prefix (``"hsapiens"``), HCOP column
        prefix, MGI ``Common Organism Name``.
    """

    name: str
    taxid: int
    aliases: tuple[str, ...] = ()


# MGI ``Common Organism Name`` values are aliases ("mouse, laboratory"), as are the BioMart dataset prefixes
# ("mmusculus") and the HCOP column prefixes ("chimp", "xenopus").
_SPECIES: tuple[Species, ...] = (
    Species("human", 9606, ("homo sapiens", "hsapiens", "h. sapiens")),
    Species("mouse", 10090, ("mus musculus", "mmusculus", "m. musculus", "mouse, laboratory")),
    Species("hamster", 10036, ("mesocricetus auratus", "mauratus", "golden hamster", "syrian hamster")),
    Species("rat", 10116, ("rattus norvegicus", "rnorvegicus", "r. norvegicus")),
    Species("zebrafish", 7955, ("danio rerio", "drerio", "d. rerio")),
    Species("chimpanzee", 9598, ("pan troglodytes", "ptroglodytes", "chimp")),
    Species("macaque", 9544, ("macaca mulatta", "mmulatta", "rhesus macaque", "rhesus")),
    Species("marmoset", 9483, ("callithrix jacchus", "cjacchus")),
    Species("dog", 9615, ("canis familiaris", "canis lupus familiaris", "clfamiliaris", "dog, domestic")),
    Species("cow", 9913, ("bos taurus", "btaurus", "cattle")),
    Species("pig", 9823, ("sus scrofa", "sscrofa")),
    Species("horse", 9796, ("equus caballus", "ecaballus")),
    Species("opossum", 13616, ("monodelphis domestica", "mdomestica")),
    Species("platypus", 9258, ("ornithorhynchus anatinus", "oanatinus")),
    Species("chicken", 9031, ("gallus gallus", "ggallus")),
    Species("anole", 28377, ("anolis carolinensis", "acarolinensis", "green anole")),
    Species("frog", 8364, ("xenopus tropicalis", "xtropicalis", "xenopus", "western clawed frog")),
    Species("fruitfly", 7227, ("drosophila melanogaster", "dmelanogaster", "fruit fly", "fly")),
    Species("worm", 6239, ("caenorhabditis elegans", "celegans", "c.elegans", "c. elegans", "nematode")),
    Species("yeast", 4932, ("saccharomyces cerevisiae", "scerevisiae", "budding yeast")),
)

_BY_NAME: dict[str, Species] = {}
for _sp in _SPECIES:
    for _key in (_sp.name, *_sp.aliases):
        _BY_NAME[_key] = _sp
_BY_TAXID: dict[int, Species] = {sp.taxid: sp for sp in _SPECIES}
# "10036", "taxon:10036", "txid10036", "NCBITaxon:10036" (after lower-casing).
_TAXID = re.compile(r"^(?:ncbi ?taxon ?:?|taxon ?:?|taxid ?:?|txid ?)?(\d+)$")
_LABEL_SEPARATORS = re.compile(r"[\s_.\-]+")


def known_species() -> list[str]:
    """Common names of the species speciesvi recognises, with their taxon ids, for error messages."""
    return [f"{sp.name} ({sp.taxid})" for sp in _SPECIES]


def parse_taxid(value: object) -> int | None:
    """The NCBI taxon id that ``value`` spells (``10036``, ``"10036"``, ``"taxon:10036"``), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    match = _TAXID.match(value.strip().lower())
    return int(match[1]) if match and int(match[1]) > 0 else None


def is_registered(species: Species) -> bool:
    """Whether speciesvi knows ``species`` by name (``False`` for a species given only by its taxon id)."""
    return _BY_TAXID.get(species.taxid) is species


def lookup_species(value: str | int) -> Species | None:
    """Return the registered :class:`Species` for a common name, alias or NCBI taxon id; ``None`` if unknown."""
    if (taxid := parse_taxid(value)) is not None:
        return _BY_TAXID.get(taxid)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    return _BY_NAME.get(text) or _BY_NAME.get(text.replace("_", " "))


def label_taxid(label: object) -> int | None:
    """NCBI taxon id named by a column or file label, e.g. ``"Mus_musculus.GRCm39.pep.all"`` -> 10090.

    The label is split at spaces, underscores, dots and dashes; the whole label, then its first two words, then its
    first word are looked up as a species name or a taxon id. ``None`` when none of them names a species.

    Examples
    --------
    >>> label_taxid("Mesocricetus_auratus.MesAur1.0.pep.all"), label_taxid("txid10141"), label_taxid("speciesA")
    (10036, 10141, None)
    """
    words = [w for w in _LABEL_SEPARATORS.split(str(label).strip().lower()) if w]
    for candidate in (" ".join(words), " ".join(words[:2]), " ".join(words[:1])):
        if not candidate:
            continue
        if (taxid := parse_taxid(candidate.replace(" ", ""))) is not None:
            return taxid
        if (species := _BY_NAME.get(candidate)) is not None:
            return species.taxid
    return None


def resolve_species(value: str | int, *, argument: str = "species") -> Species:
    """A registered species by name or taxon id, or any other NCBI taxon id as ``Species("taxon <id>", id)``.

    Raises
    ------
    TypeError
        ``value`` is neither a string nor an integer.
    ValueError
        ``value`` is neither a known species name nor a positive whole number.

    Examples
    --------
    >>> resolve_species("golden hamster")
    Species(name='hamster', taxid=10036, aliases=('mesocricetus auratus', 'mauratus', 'golden hamster', 'syrian hamster'))
    >>> resolve_species("4896").name
    'taxon 4896'
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(
            f"{argument} must be a species name (str) or an NCBI taxon id (int), not {type(value).__name__} "
            f"{value!r}; e.g. 'mouse' or 10036."
        )
    if (species := lookup_species(value)) is not None:
        return species
    if (taxid := parse_taxid(value)) is not None:
        return Species(f"taxon {taxid}", taxid)
    raise ValueError(
        f"Unknown {argument} {value!r}: not a species name speciesvi knows and not an NCBI taxon id (a positive "
        "whole number, e.g. 10036 for the golden hamster; look it up at https://www.ncbi.nlm.nih.gov/taxonomy). "
        "Known names: " + ", ".join(known_species()) + "."
    )
