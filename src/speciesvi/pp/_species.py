"""Species names, NCBI taxon ids and the spellings each homology resource uses for them."""

from __future__ import annotations

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


def known_species() -> list[str]:
    """Common names of the species speciesvi recognises, with their taxon ids, for error messages."""
    return [f"{sp.name} ({sp.taxid})" for sp in _SPECIES]


def lookup_species(value: str | int) -> Species | None:
    """Return the :class:`Species` for a common name, alias or NCBI taxon id; ``None`` if unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _BY_TAXID.get(value)
    text = str(value).strip().lower()
    if text.isdigit():
        return _BY_TAXID.get(int(text))
    return _BY_NAME.get(text) or _BY_NAME.get(text.replace("_", " "))


def resolve_species(value: str | int, *, argument: str = "species") -> Species:
    """Like :func:`lookup_species` but raise a ``ValueError`` that lists the known species."""
    species = lookup_species(value)
    if species is None:
        raise ValueError(
            f"Unknown {argument} {value!r}. Use a common name or an NCBI taxon id; known species: "
            + ", ".join(known_species())
            + "."
        )
    return species
