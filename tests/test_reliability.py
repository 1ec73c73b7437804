"""Reliability and security: resuming a killed training, safe model files, determinism across processes, offline use."""

from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pytest
import torch
from reliability_worker import EPOCHS, KILL_EPOCH, prepare, train_context, train_target

import speciesvi
from speciesvi.model import archive_model
from speciesvi.model._save import load_model_file
from speciesvi.train import ResumableCheckpoint, linear_warmup

WORKER = Path(__file__).with_name("reliability_worker.py")
LEGACY = Path(__file__).parent / "data" / "legacy_target"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run_worker(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WORKER), *args], cwd=WORKER.parent, capture_output=True, text=True, timeout=timeout
    )


def _history(model, key: str) -> np.ndarray:
    return model.history[key][key].to_numpy(dtype=float)


# -- 1. resuming after a kill --------------------------------------------------------------------------------------
def test_training_killed_mid_epoch_resumes_from_its_checkpoint(tmp_path):
    """A TargetVI killed (SIGKILL) in epoch 3 of 6 resumes from the Lightning checkpoint of epoch 2 and ends as an
    uninterrupted run does: the same 6 epochs, η and the KL weight where they stopped, identical history and latent
    (tolerance 1e-5: the resumed run replays the same minibatches and random draws)."""
    killed = _run_worker("kill", str(tmp_path))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # Lightning's own format, plain data
    assert state["epoch"] == KILL_EPOCH - 1

    context, target = prepare()
    context_model = speciesvi.ContextVI.load(tmp_path / "context", adata=context)
    resumed = train_target(
        target, context_model, callbacks=[ResumableCheckpoint(str(tmp_path / "checkpoints"))], ckpt_path="last"
    )
    uninterrupted = train_target(target, context_model)

    epochs = np.arange(EPOCHS)
    for model in (resumed, uninterrupted):
        assert list(model.history["elbo_train"].index) == list(epochs)
        np.testing.assert_allclose(_history(model, "eta"), [linear_warmup(e, 10, 10.0, 25.0) for e in epochs])
        np.testing.assert_allclose(_history(model, "kl_weight"), [linear_warmup(e, 10, 0.1, 1.0) for e in epochs])
    for key in ("elbo_train", "reconstruction_loss_train", "alignment_train"):
        np.testing.assert_allclose(_history(resumed, key), _history(uninterrupted, key), rtol=1e-5)
    np.testing.assert_allclose(
        resumed.get_latent_representation(), uninterrupted.get_latent_representation(), atol=1e-5
    )


def test_resuming_a_context_model_in_process_and_starting_afresh(tmp_path):
    """``ckpt_path="last"`` starts afresh without a checkpoint, and continues the KL warm-up after one."""
    context, _ = prepare()
    folder = str(tmp_path / "checkpoints")
    first = train_context(context, epochs=2)
    model = speciesvi.ContextVI(context, **first.init_params_["non_kwargs"])
    model.train(max_epochs=2, callbacks=[ResumableCheckpoint(folder)], ckpt_path="last", enable_progress_bar=False)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    model = speciesvi.ContextVI(context, **first.init_params_["non_kwargs"])
    model.train(max_epochs=4, callbacks=[ResumableCheckpoint(folder)], ckpt_path="last", enable_progress_bar=False)
    np.testing.assert_allclose(_history(model, "kl_weight"), [linear_warmup(e, 10, 0.1, 1.0) for e in range(4)])
    with pytest.raises(ValueError, match="monitor"):
        ResumableCheckpoint(folder, monitor="elbo_validation")


# -- 2. safe loading -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_target(tmp_path_factory):
    """A small trained TargetVI saved to a folder, its context model saved beside it (``../context``).

    Returns (target folder, context AnnData, target AnnData, latent).
    """
    context, target = prepare()
    context_model = train_context(context, epochs=1)
    model = train_target(target, context_model, epochs=1)
    model.transfer_labels(n_candidates=40, top_k=10)
    folder = tmp_path_factory.mktemp("saved") / "target"
    model.save(folder)
    context_model.save(folder.parent / "context")
    return folder, context, target, model.get_latent_representation()


def test_saved_models_are_read_with_weights_only(saved_target):
    folder, context, target, latent = saved_target
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only=True refuses the numpy/pandas types ...
        torch.load(folder / "model.pt", weights_only=True)
    for path in (folder, folder.parent / "context"):  # ... which speciesvi allows, and nothing else
        contents = load_model_file(path)
        assert contents["attr_dict"]["speciesvi_version_"] == speciesvi.__version__
    allowed = torch.serialization.get_safe_globals()
    loaded = speciesvi.TargetVI.load(folder, adata=target)
    np.testing.assert_allclose(loaded.get_latent_representation(), latent, atol=1e-6)
    assert torch.serialization.get_safe_globals() == allowed  # the allow-list holds only while a model loads


class _Payload:
    """Unpickling this writes a marker file: what a malicious model file could do with any code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran while loading')",))


@pytest.mark.parametrize("which", ["model.pt", "context/model.pt"])
def test_a_model_file_that_would_run_code_is_refused(saved_target, tmp_path, which):
    """The target's model.pt, and the context model of a folder of the earlier layout (context/model.pt)."""
    folder, context, target, _ = saved_target
    if which == "context/model.pt":  # tests/data/legacy_target: a TargetVI saved with its context model in context/
        folder = LEGACY / "model"
        context, target = anndata.read_h5ad(LEGACY / "context.h5ad"), anndata.read_h5ad(LEGACY / "target.h5ad")
    evil = tmp_path / "evil"
    shutil.copytree(folder, evil)
    marker = tmp_path / "marker.txt"
    contents = torch.load(folder / which, map_location="cpu", weights_only=False)  # our own file: trusted
    contents["attr_dict"]["history_"] = _Payload(marker)
    torch.save(contents, evil / which)

    torch.load(evil / which, weights_only=False)  # the file is malicious: scvi-tools' way of reading runs its code
    assert marker.read_text() == "code ran while loading"
    marker.unlink()

    with pytest.raises(ValueError, match="arbitrary code") as error:
        speciesvi.TargetVI.load(evil, adata=target, context_adata=context)
    assert "would call or build exec," in str(error.value)  # names the culprit
    assert isinstance(error.value.__cause__, pickle.UnpicklingError)
    with pytest.raises(ValueError, match="arbitrary code"):
        speciesvi.ContextVI.load(evil / Path(which).parent, adata=context)
    query = target[:10].copy()
    with pytest.raises(ValueError, match="arbitrary code"):
        speciesvi.TargetVI.load_query_data(query, evil, context_adata=context)
    assert not marker.exists()


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _garbage(file: Path) -> None:
    file.write_bytes(np.random.default_rng(0).bytes(4096))


def _empty(file: Path) -> None:
    file.write_bytes(b"")


def _not_a_model(file: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, file)


def _newer(file: Path) -> None:
    contents = torch.load(file, map_location="cpu", weights_only=False)
    contents["attr_dict"]["speciesvi_version_"] = "99.0.0"
    torch.save(contents, file)


def _missing(file: Path) -> None:
    file.unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, "truncated or corrupted"),
        (_garbage, "truncated or corrupted"),
        (_empty, "truncated or corrupted"),
        (_not_a_model, "not a model file written by save"),
        (_newer, "saved by speciesvi 99.0.0, newer than the installed"),
        (_missing, "lacks model.pt|no saved model"),
    ],
    ids=["truncated", "garbage", "empty", "not-a-model", "newer-version", "missing-file"],
)
def test_damaged_model_files_give_clear_errors(saved_target, tmp_path, damage, message):
    folder, context, target, _ = saved_target
    damaged_context, damaged_target = tmp_path / "context_damaged", tmp_path / "target_damaged"
    shutil.copytree(folder.parent / "context", damaged_context)
    shutil.copytree(folder, damaged_target)
    damage(damaged_context / "model.pt")
    with pytest.raises(ValueError, match=message):
        speciesvi.ContextVI.load(damaged_context, adata=context)
    damage(damaged_target / "model.pt")
    with pytest.raises(ValueError, match=message):
        speciesvi.TargetVI.load(damaged_target, adata=target)


def test_missing_folders_give_clear_errors(saved_target, tmp_path):
    folder, context, target, _ = saved_target
    with pytest.raises(ValueError, match="nothing there"):
        speciesvi.ContextVI.load(tmp_path / "nowhere", adata=context)
    with pytest.raises(ValueError, match="does not exist"):
        load_model_file(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="does not exist"):
        speciesvi.TargetVI.load(tmp_path / "nowhere", adata=target)


def test_loading_from_a_url_without_sha256_warns(saved_target, tmp_path, caplog):
    folder, context, _, _ = saved_target
    archive = archive_model(folder.parent / "context", tmp_path / "context.tar.gz")
    url = archive.as_uri()  # file:// - no network
    with caplog.at_level(logging.WARNING, logger="speciesvi"):
        speciesvi.ContextVI.load(url, adata=context, cache_dir=tmp_path / "cache")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without sha256=" in w and "not verified" in w for w in warnings), warnings
    caplog.clear()
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with caplog.at_level(logging.WARNING, logger="speciesvi"):
        speciesvi.ContextVI.load(url, adata=context, cache_dir=tmp_path / "cache", sha256=digest)
    assert not [r for r in caplog.records if "sha256" in r.getMessage()]


# -- 4. determinism ------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_results_in_two_fresh_processes(tmp_path):
    """On the CPU, two fresh processes with scvi.settings.seed = 0 give bit-identical latents, labels, confidences,
    cell-type similarities, homolog LFC tables and training histories."""
    outputs = [tmp_path / f"run{i}.npz" for i in range(2)]
    runs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "workflow", str(out)],
            cwd=WORKER.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outputs
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
    first, second = (np.load(out) for out in outputs)
    assert sorted(first.files) == sorted(second.files)
    for name in first.files:
        assert np.array_equal(first[name], second[name]), name
    assert first["target_latent"].shape[0] == 120 and np.isfinite(first["lfc"]).all()


# -- 5. no network unless asked --------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Refuse every internet connection (AF_INET/AF_INET6) and name lookup; local Unix sockets still work."""

    def refuse(*args, **kwargs):
        raise OSError("network access blocked by the test")

    original_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        return original_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: refuse())
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("NO_PROXY", "*")


def test_the_demo_workflow_runs_offline(no_network, tmp_path):
    """The demo workflow on the embedded Baron pair needs no network: every internet socket is blocked.

    The public API steps of ``speciesvi.demo`` (homology table, gene translation and selection, neighbours, both
    models, label transfer, cell-type similarity, homolog LFC, plots, saving and loading from a ``file://`` URL),
    with the models on 500 mouse and 400 human cells and one epoch each, so that it stays fast.
    """
    import matplotlib

    matplotlib.use("Agg")
    with pytest.raises(ConnectionError):  # the block works: a download fails
        speciesvi.model.fetch_model("https://example.org/model.tar.gz", cache_dir=tmp_path / "cache", timeout=1)

    mouse, human = speciesvi.datasets.baron_pancreas()
    table = speciesvi.pp.homology_table("human", "mouse")
    speciesvi.pp.translate_genes(human, table, context=mouse)
    speciesvi.pp.select_genes(human, mouse, target_batch_key="donor", context_batch_key="donor")
    rng = np.random.default_rng(0)
    mouse = mouse[np.sort(rng.choice(mouse.n_obs, 500, replace=False))].copy()
    human = human[np.sort(rng.choice(human.n_obs, 400, replace=False))].copy()
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key="cell_ontology_class")
    speciesvi.ContextVI.setup_anndata(mouse, batch_key="donor", labels_key="cell_ontology_class")
    context = speciesvi.ContextVI(mouse)
    context.train(max_epochs=1, enable_progress_bar=False)
    speciesvi.TargetVI.setup_anndata(human, batch_key="donor")
    target = speciesvi.TargetVI(human, context)
    target.train(max_epochs=1, enable_progress_bar=False)
    labels = target.transfer_labels(n_candidates=100)
    types = target.cell_type_similarity(n_target=50, n_context=10, scale="min_max")
    speciesvi.pl.similarity_heatmap(types, save=tmp_path / "similarity.png")
    shared = [t for t in ("type B pancreatic cell", "pancreatic A cell") if t in set(labels["label"].astype(str))]
    lfc = target.homolog_lfc(labels_key="cell_ontology_class", cell_types=shared, n_samples=500, progress_bar=False)
    assert len(labels) == human.n_obs and len(types) > 0 and len(lfc) > 0
    target.save(tmp_path / "models" / "target")
    context.save(tmp_path / "models" / "context")
    url = archive_model(tmp_path / "models" / "context", tmp_path / "context.tar.gz").as_uri()
    loaded = speciesvi.ContextVI.load(url, adata=mouse, cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(loaded.get_latent_representation(), context.get_latent_representation(), atol=1e-5)
    reloaded = speciesvi.TargetVI.load(tmp_path / "models" / "target", adata=human)  # no context needed
    np.testing.assert_allclose(reloaded.get_latent_representation(), target.get_latent_representation(), atol=1e-5)
