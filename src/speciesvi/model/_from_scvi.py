"""Adopting a pretrained scvi-tools :class:`~scvi.model.SCVI` model as a speciesvi context model."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import torch
from scvi import REGISTRY_KEYS, settings
from torch import nn

from ._fingerprint import module_fingerprint
from ._training import plan_kwargs_with_defaults

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI
    from scvi.model.base import BaseModelClass

    from ..module._components import MLP

logger = logging.getLogger(__name__)


def _refuse(problem: str) -> None:
    raise ValueError(f"This SCVI model cannot be adopted as a context model: {problem}")


def _fold(layer: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Weight and bias of one scvi FCLayers layer with its batch norm (eval mode) folded in; and whether it has layer norm."""
    linear, batch_norm, layer_norm, activation = layer[0], layer[1], layer[2], layer[3]
    if not isinstance(activation, nn.ReLU):
        _refuse(f"its hidden layers use {type(activation).__name__}; speciesvi's use ReLU.")
    weight = linear.weight.detach().cpu().clone()
    bias = linear.bias.detach().cpu().clone() if linear.bias is not None else weight.new_zeros(weight.shape[0])
    if batch_norm is not None:
        scale = 1.0 / torch.sqrt(batch_norm.running_var.detach().cpu() + batch_norm.eps)
        shift = torch.zeros_like(scale)
        if batch_norm.affine:
            scale, shift = scale * batch_norm.weight.detach().cpu(), batch_norm.bias.detach().cpu()
        weight = weight * scale[:, None]
        bias = (bias - batch_norm.running_mean.detach().cpu()) * scale + shift
    if layer_norm is not None and layer_norm.elementwise_affine:
        _refuse("its layer norm has affine parameters; speciesvi's layer norm has none.")
    return weight, bias, layer_norm is not None


def _layer_norm_of(fc_layers) -> bool:
    return any(layer[2] is not None for layer in fc_layers.fc_layers)


@torch.no_grad()
def _copy_fc(source, target: MLP, n_main: int, what: str) -> None:
    """Copy an scvi FCLayers stack into a speciesvi MLP: one block per layer, covariate columns last."""
    layers = list(source.fc_layers)
    if len(layers) != len(target.blocks):
        raise AssertionError(f"{what}: {len(layers)} layers against {len(target.blocks)} blocks")
    if len(layers) > 1 and source.n_cov > 0 and source.inject_covariates:
        _refuse(
            f"its {what} injects the batch into each of its {len(layers)} layers; speciesvi feeds covariates to "
            "the first layer only (adopt a model with n_layers=1, or deeply_inject_covariates=False)."
        )
    for i, layer in enumerate(layers):
        weight, bias, _ = _fold(layer)
        linear = target.blocks[i].fc_layers[0][0]
        if i == 0:
            n_cov_source, n_cov_target = weight.shape[1] - n_main, linear.in_features - n_main
            full = torch.zeros_like(linear.weight)
            full[:, :n_main] = weight[:, :n_main]
            if n_cov_source == n_cov_target:
                full[:, n_main:] = weight[:, n_main:]
            elif n_cov_source != 0:
                _refuse(f"its {what} takes {n_cov_source} covariate columns where speciesvi expects {n_cov_target}.")
            weight = full
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)


@torch.no_grad()
def _copy_gaussian_head(mean: nn.Linear, var: nn.Linear, head) -> None:
    """Scvi's (mean, log variance) heads as speciesvi's (mean, log std): log std = log variance / 2."""
    head.mean.weight.copy_(mean.weight.detach().cpu())
    head.mean.bias.copy_(mean.bias.detach().cpu())
    head.log_std.weight.copy_(var.weight.detach().cpu() / 2)
    head.log_std.bias.copy_(var.bias.detach().cpu() / 2)


def _check_scvi_model(scvi_model) -> None:
    from scvi.model import SCVI

    if not isinstance(scvi_model, SCVI):
        raise TypeError(f"scvi_model must be a scvi.model.SCVI, got {type(scvi_model).__name__}.")
    if not scvi_model.is_trained_:
        raise ValueError("The SCVI model is not trained; train it (or load a trained one) first.")
    module = scvi_model.module
    if getattr(scvi_model, "minified_data_type", None) is not None:
        _refuse("it is minified (its AnnData holds no counts); load the full model and data.")
    if module.latent_distribution != "normal":
        _refuse(f"latent_distribution={module.latent_distribution!r}; only 'normal' maps onto speciesvi's z.")
    if module.gene_likelihood not in ("zinb", "nb"):
        _refuse(f"gene_likelihood={module.gene_likelihood!r}; speciesvi models counts with 'zinb' or 'nb'.")
    if module.dispersion not in ("gene", "gene-batch", "gene-cell"):
        _refuse(f"dispersion={module.dispersion!r}; speciesvi supports 'gene', 'gene-batch' and 'gene-cell'.")
    if not module.log_variational:
        _refuse("log_variational=False; speciesvi's encoders read log1p counts.")
    if module.batch_representation != "one-hot":
        _refuse("its batches are embedded; speciesvi encodes batches one-hot.")
    if module.use_size_factor_key:
        _refuse("it uses a size factor key; speciesvi learns the library size.")
    stats = scvi_model.summary_stats
    if stats.get("n_extra_categorical_covs", 0) or stats.get("n_extra_continuous_covs", 0):
        _refuse("it has extra covariates; speciesvi conditions on the batch only.")
    decoder = module.decoder.px_decoder
    if module.n_layers > 1 and decoder.n_cov > 0 and decoder.inject_covariates:
        _refuse(
            f"its decoder injects the batch into each of its {module.n_layers} layers; speciesvi feeds covariates to "
            "the first layer only (adopt a model with n_layers=1, or deeply_inject_covariates=False)."
        )
    activation = module.z_encoder.var_activation
    if activation is not torch.exp:
        _refuse(f"its variance activation is {activation}; only torch.exp (the default) is supported.")


def adopt_scvi_model(
    context_cls: type[BaseModelClass],
    scvi_model: SCVI,
    adata: AnnData | None = None,
    labels_key: str | None = None,
    library_epochs: int = 10,
    **train_kwargs,
) -> BaseModelClass:
    """Build a ``context_cls`` (:class:`~speciesvi.ContextVI` or a subclass) from a trained :class:`scvi.model.SCVI`.

    See :func:`speciesvi.model.context_from_scvi` for what carries over and what does not; the arguments are its.
    """
    _check_scvi_model(scvi_model)
    module = scvi_model.module
    setup = scvi_model.adata_manager.registry["setup_args"]
    adata = scvi_model.adata if adata is None else adata
    if adata is None:
        raise ValueError("The SCVI model holds no AnnData; pass adata= (the context data it was trained on).")
    var_names = scvi_model.adata.var_names if scvi_model.adata is not None else None
    if var_names is not None and not adata.var_names.equals(var_names):
        raise ValueError(
            f"adata has {adata.n_vars} genes that differ from the SCVI model's {len(var_names)} (names and order "
            "must match); subset it with adata[:, scvi_model.adata.var_names]."
        )
    if labels_key is None:
        labels_key = setup.get("labels_key")
    if library_epochs < 0:
        raise ValueError(f"library_epochs must be >= 0, got {library_epochs}.")

    context_cls.setup_anndata(adata, layer=setup.get("layer"), batch_key=setup.get("batch_key"), labels_key=labels_key)
    n_layers, n_hidden = module.n_layers, module.n_hidden
    layer_norm = []
    if _layer_norm_of(module.z_encoder.encoder):
        layer_norm.append("outer")
    if _layer_norm_of(module.decoder.px_decoder):
        layer_norm.append("decoder")
    if _layer_norm_of(module.l_encoder.encoder):
        layer_norm.append("library")
    dropout = next((m.p for m in module.z_encoder.encoder.modules() if isinstance(m, nn.Dropout)), 0.0)
    model = context_cls(
        adata,
        n_latent=module.n_latent,
        n_hidden_outer=(n_hidden,) * n_layers,
        n_hidden_inner=(n_hidden,),
        n_hidden_library=(n_hidden,),
        n_hidden_decoder=(n_hidden,) * n_layers,
        dropout_rate=dropout,
        gene_likelihood=module.gene_likelihood,
        dispersion=module.dispersion,
        use_layer_norm=tuple(layer_norm),
    )
    ours = model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
    theirs = scvi_model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
    if list(ours) != list(theirs):
        raise ValueError(
            f"The batches of adata ({list(ours)}) are not the SCVI model's ({list(theirs)}); pass the AnnData the SCVI "
            "model was set up with."
        )

    source, target = module, model.module
    n_input = scvi_model.summary_stats.n_vars
    with torch.no_grad():
        _copy_fc(source.z_encoder.encoder, target.outer_encoder, n_input, "encoder")
        inner = target.inner_encoder.mlp.blocks[0].fc_layers[0][0]
        inner.weight.copy_(torch.eye(n_hidden))
        inner.bias.zero_()
        _copy_gaussian_head(source.z_encoder.mean_encoder, source.z_encoder.var_encoder, target.inner_encoder.head)
        _copy_fc(source.decoder.px_decoder, target.decoder.mlp, module.n_latent, "decoder")
        target.decoder.logits.weight.copy_(source.decoder.px_scale_decoder[0].weight.detach().cpu())
        target.decoder.logits.bias.copy_(source.decoder.px_scale_decoder[0].bias.detach().cpu())
        if module.dispersion == "gene-cell":
            target.decoder.log_theta_head.load_state_dict(source.decoder.px_r_decoder.state_dict())
        else:
            target.decoder.log_theta.copy_(source.px_r.detach().cpu().reshape(target.decoder.log_theta.shape))
        if module.gene_likelihood == "zinb":
            target.decoder.zi_logits.load_state_dict(source.decoder.px_dropout_decoder.state_dict())
        if not module.use_observed_lib_size:
            _copy_fc(source.l_encoder.encoder, target.library_encoder.mlp, n_input, "library encoder")
            _copy_gaussian_head(
                source.l_encoder.mean_encoder, source.l_encoder.var_encoder, target.library_encoder.head
            )
            target.library_encoder.log_library_offset.zero_()
    model.adopted_from_ = {
        "class": type(scvi_model).__name__,
        "fingerprint": module_fingerprint(source),
        "use_observed_lib_size": bool(module.use_observed_lib_size),
        "library_epochs": int(library_epochs) if module.use_observed_lib_size else 0,
    }
    model._model_summary_string = model._model_summary_string.replace("ContextVI:", "ContextVI (adopted from SCVI):")
    if module.use_observed_lib_size and library_epochs > 0:
        _fit_library_encoder(model, library_epochs, **train_kwargs)
    else:
        if module.use_observed_lib_size:
            warnings.warn(
                "library_epochs=0: the library encoder of the adopted context model is untrained.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )
        model.is_trained_ = True
    model.module.eval()
    return model


def _fit_library_encoder(model: BaseModelClass, epochs: int, **train_kwargs) -> None:
    """Train the library encoder alone (every other parameter frozen, so it stays byte-identical)."""
    requires_grad = {name: p.requires_grad for name, p in model.module.named_parameters()}
    model.module.requires_grad_(False)
    model.module.library_encoder.requires_grad_(True)
    plan_kwargs = plan_kwargs_with_defaults(
        {"weight_decay": 0.0}, train_kwargs.pop("plan_config", None), train_kwargs.pop("plan_kwargs", None)
    )
    train_kwargs.setdefault("enable_progress_bar", False)
    logger.info("Fitting the library encoder of the adopted context model for %d epochs.", epochs)
    try:
        model.train(max_epochs=epochs, plan_kwargs=plan_kwargs, **train_kwargs)
    finally:
        for name, parameter in model.module.named_parameters():
            parameter.requires_grad_(requires_grad[name])
