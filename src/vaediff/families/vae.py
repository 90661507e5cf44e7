"""VAE and conditional VAE runs: the training objective, loading a run back, and the run's figures."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from vaediff.data import Dataset
from vaediff.errors import ConfigError
from vaediff.figures import plt, save_figure, save_grid
from vaediff.likelihood import negative_elbo
from vaediff.models.vae import VAE, VAEConfig
from vaediff.runs import (
    atomic_save_safetensors,
    config_from_dict,
    load_safetensors,
    load_state_strict,
)
from vaediff.train import BatchRandom, is_main_process

WEIGHTS_FILE = "model.safetensors"


class VAEObjective:
    """Negative ELBO per image (nats), with optional dynamic binarization of the training pixels."""

    loss_names = ("loss", "recon", "kl")

    def __init__(self, config: VAEConfig, binarize: bool = False):
        self.config, self.binarize = config, binarize

    def losses(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               draw: BatchRandom) -> dict[str, torch.Tensor]:
        if self.binarize:  # a fresh Bernoulli draw of every pixel at every step (dynamic binarization)
            images = (draw.uniform(*images.shape[1:]) < images).to(images.dtype)
        noise = draw.normal(self.config.latent)
        return negative_elbo(module, images, labels if self.config.conditional else None, noise)

    def export(self, module: nn.Module, run_dir: Path) -> None:
        atomic_save_safetensors(module.state_dict(), Path(run_dir) / WEIGHTS_FILE)


@dataclass
class VAERun:
    """A trained VAE or CVAE loaded from its run directory."""

    run_dir: Path
    config: dict
    model: VAE

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def conditional(self) -> bool:
        return self.model.config.conditional

    @classmethod
    def load(cls, run_dir: str | Path, config: dict) -> VAERun:
        run_dir = Path(run_dir)
        model_config = config_from_dict(VAEConfig, config.get("model"), f"{run_dir}/config.json 'model'")
        model = VAE(model_config)
        load_state_strict(model, load_safetensors(run_dir / WEIGHTS_FILE), run_dir / WEIGHTS_FILE)
        return cls(run_dir, config, model.eval())

    @torch.no_grad()
    def generate(self, count: int, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """`count` images in [0, 1] decoded from z ~ N(0, I) (the decoder's mean image)."""
        latents = torch.randn((count, self.model.config.latent), generator=generator)
        return self.model.decode(latents, labels if self.conditional else None)


def decoded_interpolations(model: VAE, starts: torch.Tensor, ends: torch.Tensor, labels: torch.Tensor | None,
                           steps: int = 10) -> torch.Tensor:
    """Decode straight lines between the latent means of pairs of images: (pairs * steps, 1, H, W)."""
    mu_start, _ = model.encode(starts, labels)
    mu_end, _ = model.encode(ends, labels)
    weights = torch.linspace(0, 1, steps).view(1, steps, 1)
    path = mu_start.unsqueeze(1) * (1 - weights) + mu_end.unsqueeze(1) * weights  # (pairs, steps, latent)
    path_labels = labels.repeat_interleave(steps) if labels is not None else None
    return model.decode(path.reshape(-1, path.shape[-1]), path_labels)


def _interpolation_pairs(labels: torch.Tensor, conditional: bool, pairs: int) -> list[tuple[int, int]]:
    """Test-image index pairs: two images of one class for a CVAE (the label is fixed along the line),
    images of two different classes for a VAE."""
    chosen = []
    for k in range(pairs):
        first_class, second_class = k % 10, k % 10 if conditional else (k + 3) % 10
        first = torch.nonzero(labels == first_class).flatten()
        second = torch.nonzero(labels == second_class).flatten()
        if len(first) == 0 or len(second) < (2 if conditional else 1):
            continue
        chosen.append((int(first[0]), int(second[1] if conditional else second[0])))
    return chosen


@torch.no_grad()
def write_vae_figures(run: VAERun, dataset: Dataset, seed: int = 0, tsne: bool = False) -> None:
    """samples.png, reconstructions.png, latent.png and interpolation.png of a trained VAE/CVAE run."""
    from vaediff.sampling import write_sample_grid

    model, out, test = run.model, run.run_dir, dataset.test
    write_sample_grid(run, out / "samples.png", seed=seed, class_names=dataset.class_names)
    cond = run.conditional

    originals, labels = test.images[:20], test.labels[:20]
    mu, _ = model.encode(originals, labels if cond else None)
    recon = model.decode(mu, labels if cond else None)
    rows = torch.cat([originals[:10], recon[:10], originals[10:], recon[10:]])
    save_grid(rows, out / "reconstructions.png", f"{run.model_type}: test images above their reconstructions",
              columns=10, row_labels=["test", "reconstruction"] * 2)

    pairs = _interpolation_pairs(test.labels, cond, pairs=6)
    starts = test.images[[a for a, _ in pairs]]
    ends = test.images[[b for _, b in pairs]]
    pair_labels = test.labels[[a for a, _ in pairs]] if cond else None
    lines = decoded_interpolations(model, starts, ends, pair_labels, steps=10)
    names = dataset.class_names
    row_names = [f"{names[test.labels[a]]} → {names[test.labels[b]]}" for a, b in pairs]
    save_grid(lines, out / "interpolation.png", f"{run.model_type}: straight lines in latent space",
              columns=10, row_labels=row_names)
    plot_latent_space(model, dataset, out / "latent.png", tsne=tsne, seed=seed)


@torch.no_grad()
def plot_latent_space(model: VAE, dataset: Dataset, path: Path, tsne: bool = False, seed: int = 0) -> None:
    """The test set's latent means in 2-D (PCA, or t-SNE), coloured by class."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    test = dataset.test
    limit = min(len(test), 3000 if tsne else 10000)  # t-SNE is quadratic; 3,000 points take seconds
    mu, _ = model.encode(test.images[:limit], test.labels[:limit] if model.config.conditional else None)
    points = mu.numpy()
    if model.config.latent == 2:
        method, coords = "the 2-d latent itself", points
    elif tsne:
        method = "t-SNE"
        coords = TSNE(n_components=2, random_state=seed, init="pca", perplexity=30).fit_transform(points)
    else:
        pca = PCA(n_components=2, random_state=seed).fit(points)
        coords = pca.transform(points)
        method = f"PCA ({100 * pca.explained_variance_ratio_.sum():.0f}% of variance)"
    figure, axis = plt.subplots(figsize=(6.4, 5.4))
    colours = plt.get_cmap("tab10")
    labels = test.labels[:limit].numpy()
    for c in range(10):
        mask = labels == c
        axis.scatter(coords[mask, 0], coords[mask, 1], s=5, alpha=0.6, color=colours(c), label=dataset.class_names[c])
    axis.set_xlabel("component 1")
    axis.set_ylabel("component 2")
    kind = "cvae" if model.config.conditional else "vae"
    axis.set_title(f"{kind}: test-set latent means, {method}")
    axis.legend(markerscale=3, fontsize=7, loc="best", ncols=2)
    save_figure(figure, path, dpi=100)


def build_model_config(model_type: str, options: dict) -> VAEConfig:
    """The seed's sizes unless `options["model"]` overrides fields (hidden, latent)."""
    overrides = dict(options.get("model") or {})
    overrides.update({k: options[k] for k in ("hidden", "latent") if options.get(k) is not None})
    overrides.pop("conditional", None)
    try:
        return config_from_dict(VAEConfig, {**overrides, "conditional": model_type == "cvae"}, "--model-config")
    except ValueError as exc:
        raise ConfigError(f"--model-config: {exc}") from None


def default_train_options(model_config: VAEConfig, options: dict) -> dict:
    """The seed's recipe: Adam 1e-3, batch 64, constant learning rate, no EMA."""
    return {"batch_size": 64, "lr": 1e-3, "lr_schedule": "constant", "epochs": 10}


def train_vae(run_dir: Path, dataset: Dataset, model_config: VAEConfig, train_config, resume: bool,
              options: dict, progress: bool = True, figures: bool = True):
    from vaediff.train import train

    objective = VAEObjective(model_config, binarize=bool(options.get("binarize")))
    state = train(objective, partial(VAE, model_config), dataset, train_config, run_dir, resume=resume,
                  title=f"{model_config.model_type} on {dataset.name}", progress=progress)
    if figures and is_main_process():
        run = VAERun.load(run_dir, {"model": _model_dict(model_config)})
        write_vae_figures(run, dataset, seed=train_config.seed, tsne=bool(options.get("tsne")))
    return state


def _model_dict(config: VAEConfig) -> dict:
    from vaediff.runs import config_to_dict

    return config_to_dict(config)
