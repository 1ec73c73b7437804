"""Train the pretrained ContextVI shipped with speciesvi: ``ContextVI.load_pretrained("baron_mouse_pancreas")``.

Run from the repository root (CPU; 4.5 minutes on a busy two-core machine)::

    python scripts/make_pretrained_context.py

Recipe: the embedded Baron et al. (2016) pair (:func:`speciesvi.datasets.baron_pancreas`), the human genes
translated to mouse (:func:`speciesvi.pp.translate_genes` with ``context=mouse``), then
:func:`speciesvi.pp.select_genes` with donor batches; the mouse side (its 4,000 most variable genes plus the
homologs of the human ones, 5,406 genes) is the context. A ContextVI with donor batches and labels
``cell_ontology_class`` is trained for 40 epochs on all cells (``scvi.settings.seed = 0``), with compact hidden
layers (outer encoder 128, library encoder 32, decoder 128-128) so that the shipped file stays small, and
written with :func:`speciesvi.model.to_hub_model` (an scvi-hub folder: ``model.pt``, metadata and model card;
no AnnData) to ``src/speciesvi/datasets/pretrained/baron_mouse_pancreas/``. The floating-point weights are then
stored in half precision (float16), which halves the file; ``load`` casts them back to float32. The script
checks that the shipped model loads offline and encodes the cells as the trained model does.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import scvi
import torch

import speciesvi
from speciesvi.model._save import load_model_file

logger = logging.getLogger("make_pretrained_context")

NAME = "baron_mouse_pancreas"
OUT_DIR = Path(__file__).parents[1] / "src" / "speciesvi" / "datasets" / "pretrained" / NAME
SEED = 0
EPOCHS = 40
BATCH_KEY = "donor"
LABELS_KEY = "cell_ontology_class"
ARCHITECTURE = {"n_hidden_outer": (128,), "n_hidden_library": (32,), "n_hidden_decoder": (128, 128)}
#: Largest difference of the latent means allowed between the trained model and the half-precision file.
TOLERANCE = 0.05
DESCRIPTION = f"""\
ContextVI of the Baron et al. (2016) mouse pancreas (GEO GSE84133, inDrop; 1,886 cells, donors `mouse1` and
`mouse2`, 12 cell types in `obs["{LABELS_KEY}"]`), shipped with speciesvi and loaded offline with
`speciesvi.ContextVI.load_pretrained("{NAME}")`. Genes: the mouse side of `speciesvi.pp.select_genes` (donor
batches) after `speciesvi.pp.translate_genes` of the human Baron data with `context=mouse`, i.e. the mouse 4,000
most variable genes plus the homologs of the human ones. Trained {EPOCHS} epochs on all cells, seed {SEED},
hidden layers: outer encoder 128, library encoder 32, decoder 128-128 (`scripts/make_pretrained_context.py`).
Weights stored in float16, loaded as float32.
"""


def context_anndata():
    """The mouse demo AnnData restricted to the mouse side of ``select_genes`` against the translated human."""
    mouse, human = speciesvi.datasets.baron_pancreas()
    speciesvi.pp.translate_genes(human, speciesvi.pp.homology_table("human", "mouse"), context=mouse)
    speciesvi.pp.select_genes(human, mouse, target_batch_key=BATCH_KEY, context_batch_key=BATCH_KEY)
    return mouse


def train(mouse) -> speciesvi.ContextVI:
    """A ContextVI trained with the fixed recipe (seed, epochs, architecture)."""
    scvi.settings.seed = SEED
    speciesvi.ContextVI.setup_anndata(mouse, batch_key=BATCH_KEY, labels_key=LABELS_KEY)
    model = speciesvi.ContextVI(mouse, **ARCHITECTURE)
    model.train(max_epochs=EPOCHS, train_size=1.0, enable_progress_bar=False)
    return model


def to_half_precision(folder: Path) -> None:
    """Rewrite ``folder/model.pt`` with its floating-point tensors in float16 (read safely, written back)."""
    contents = load_model_file(folder)
    state = contents["model_state_dict"]
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            state[key] = value.to(torch.float16)
    torch.save(contents, folder / "model.pt")


def main(out_dir: Path = OUT_DIR) -> None:
    """Train, write the scvi-hub folder to ``out_dir`` in half precision, and check that it loads."""
    mouse = context_anndata()
    logger.info("Context: %d cells x %d genes", mouse.n_obs, mouse.n_vars)
    model = train(mouse)
    expected = model.get_latent_representation()
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / NAME
        speciesvi.model.to_hub_model(model, staging, tissues=["pancreas"], description=DESCRIPTION)
        to_half_precision(staging)
        out_dir.mkdir(parents=True, exist_ok=True)
        for file in sorted(staging.iterdir()):
            file.replace(out_dir / file.name)
    loaded = speciesvi.ContextVI.load(out_dir, adata=speciesvi.datasets.baron_pancreas()[0][:, mouse.var_names].copy())
    difference = float(np.abs(loaded.get_latent_representation() - expected).max())
    logger.info("Largest latent difference after float16 storage: %.4g", difference)
    if difference > TOLERANCE:
        raise RuntimeError(f"The half-precision model encodes differently ({difference:.4g} > {TOLERANCE}).")
    for file in sorted(out_dir.iterdir()):
        logger.info("%s: %.2f MB", file, file.stat().st_size / 1e6)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="folder to write the model to")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(args.out_dir)
