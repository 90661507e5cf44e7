"""VAE and conditional VAE (the seed's 784-400-20 MLP): the family's description, its run, its figures."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from vaediff.data import MNIST_SHAPE, Dataset, DataShape, ImageSplit
from vaediff.errors import ConfigError
from vaediff.families.base import Family, LikelihoodSettings, Option, Run, TrainingPlan, TrainingRequest
from vaediff.figures import save_grid, save_latent_scatter
from vaediff.generation import write_sample_grid
from vaediff.models.limits import dry_build, with_data_fields
from vaediff.models.vae import VAE, VAEConfig
from vaediff.objectives.vae import VAEObjective, held_out_bounds
from vaediff.runs import atomic_save_safetensors, config_from_dict, load_safetensors, load_state_strict

WEIGHTS_FILE = "model.safetensors"


def save_weights(module: nn.Module, run_dir: Path) -> None:
    atomic_save_safetensors(module.state_dict(), Path(run_dir) / WEIGHTS_FILE)


class VAERun(Run):
    """A trained VAE or CVAE loaded from its run directory."""

    has_latent_space = True
    likelihood_options = ("iw_samples", "binarize")

    def __init__(self, run_dir: Path, config: dict, model: VAE):
        self.run_dir, self.config, self.model = Path(run_dir), config, model
        self.model_type, self.conditional = model.config.model_type, model.config.conditional
        self.num_classes = model.config.num_classes

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
        latents = torch.randn((count, self.model.config.latent), generator=generator)  # the CPU's draw, any device
        return self.decode(latents, labels)

    @torch.no_grad()
    def latent_means(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        labels = labels.to(self.device) if self.conditional and labels is not None else None
        return self.model.encode(images.to(self.device), labels)[0].cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Latents -> images; a CVAE's labels may be soft one-hot rows (blends of classes)."""
        labels = labels.to(self.device) if self.conditional and labels is not None else None
        return self.model.decode(latents.to(self.device), labels).cpu()

    def likelihood(self, split: ImageSplit, settings: LikelihoodSettings, seed: int, progress: bool) -> dict:
        if settings.binarize and self.model.config.decoder != "bernoulli":
            raise ConfigError("--binarize is the Bernoulli decoder's axis; this run's decoder is "
                              f"{self.model.config.decoder} (a density on 8-bit pixels)")
        return held_out_bounds(self.model, split, settings.iw_samples, settings.binarize, seed, progress=progress)


def decoded_interpolations(model: VAE, starts: torch.Tensor, ends: torch.Tensor, labels: torch.Tensor | None,
                           steps: int = 10) -> torch.Tensor:
    """Decode straight lines between the latent means of pairs of images: (pairs * steps, 1, H, W)."""
    mu_start, _ = model.encode(starts, labels)
    mu_end, _ = model.encode(ends, labels)
    weights = torch.linspace(0, 1, steps, device=mu_start.device).view(1, steps, 1)
    path = mu_start.unsqueeze(1) * (1 - weights) + mu_end.unsqueeze(1) * weights  # (pairs, steps, latent)
    path_labels = labels.repeat_interleave(steps) if labels is not None else None
    return model.decode(path.reshape(-1, path.shape[-1]), path_labels)


def _interpolation_pairs(labels: torch.Tensor, conditional: bool, pairs: int) -> list[tuple[int, int]]:
    """Test-image index pairs: two images of one class for a CVAE (the label is fixed along the line),
    images of two different classes for a VAE (two images in turn for an unlabelled set)."""
    classes = int(labels.max()) + 1 if len(labels) else 1
    if classes == 1:
        return [(2 * k, 2 * k + 1) for k in range(min(pairs, len(labels) // 2))]
    chosen = []
    for k in range(pairs):
        first_class, second_class = k % classes, k % classes if conditional else (k + 3) % classes
        first = torch.nonzero(labels == first_class).flatten()
        second = torch.nonzero(labels == second_class).flatten()
        if len(first) == 0 or len(second) < (2 if conditional else 1):
            continue
        chosen.append((int(first[0]), int(second[1] if conditional else second[0])))
    return chosen


@torch.no_grad()
def write_vae_figures(run: VAERun, dataset: Dataset, seed: int = 0, options: dict | None = None) -> None:
    """samples.png, reconstructions.png, latent.png and interpolation.png of a trained VAE/CVAE run, its
    networks where the run computes (run.device), the images back on the CPU."""
    model, out, test, cond, device = run.model, run.run_dir, dataset.test, run.conditional, run.device
    write_sample_grid(run, out / "samples.png", seed=seed, class_names=dataset.class_names)
    originals, labels = test.as_float(slice(0, 20)), test.labels[:20]
    recon = run.decode(run.latent_means(originals, labels), labels)
    rows = torch.cat([originals[:10], recon[:10], originals[10:], recon[10:]])
    save_grid(rows, out / "reconstructions.png", f"{run.model_type}: test images above their reconstructions",
              columns=10, row_labels=["test", "reconstruction"] * 2)
    pairs = _interpolation_pairs(test.labels, cond, pairs=6)
    starts, ends = test.as_float(torch.tensor([a for a, _ in pairs])), test.as_float(torch.tensor([b for _, b in pairs]))
    pair_labels = test.labels[[a for a, _ in pairs]].to(device) if cond else None
    lines = decoded_interpolations(model, starts.to(device), ends.to(device), pair_labels, steps=10).cpu()
    row_names = [f"{dataset.class_names[test.labels[a]]} → {dataset.class_names[test.labels[b]]}" for a, b in pairs]
    save_grid(lines, out / "interpolation.png", f"{run.model_type}: straight lines in latent space",
              columns=10, row_labels=row_names)
    tsne = bool((options or {}).get("tsne"))
    limit = min(len(test), 3000 if tsne else 10000)  # t-SNE is quadratic; 3,000 points take seconds
    coords, method = latent_plane(run.latent_means(test.as_float(slice(0, limit)), test.labels[:limit]), tsne, seed)
    save_latent_scatter(coords, test.labels[:limit].numpy(), dataset.class_names, out / "latent.png",
                        f"{run.model_type}: test-set latent means, {method}")


def latent_plane(means: torch.Tensor, tsne: bool, seed: int):
    """Latent means in 2-D: the latent itself when it is 2-d, else t-SNE or PCA; and the method's name."""
    from sklearn.decomposition import PCA  # scikit-learn takes seconds to import; only this figure needs it
    from sklearn.manifold import TSNE

    points = means.numpy()
    if points.shape[1] == 2:
        return points, "the 2-d latent itself"
    if tsne:
        return TSNE(n_components=2, random_state=seed, init="pca", perplexity=30).fit_transform(points), "t-SNE"
    pca = PCA(n_components=2, random_state=seed).fit(points)
    return pca.transform(points), f"PCA ({100 * pca.explained_variance_ratio_.sum():.0f}% of variance)"


def build_model_config(model_type: str, options: dict, shape: DataShape = MNIST_SHAPE) -> VAEConfig:
    """The seed's sizes unless `options["model"]` overrides fields (hidden, latent); input size and classes
    from the data's `shape`."""
    if model_type == "cvae" and not shape.labelled:
        raise ConfigError("cvae needs class labels and this data set is unlabelled; train vae instead")
    overrides = dict(options.get("model") or {})
    overrides.update({k: options[k] for k in ("hidden", "latent", "decoder") if options.get(k) is not None})
    data = {"conditional": model_type == "cvae", "image_size": shape.image_size, "channels": shape.channels,
            "num_classes": shape.num_classes}
    config = config_from_dict(VAEConfig, with_data_fields(overrides, data, "--model-config"), "--model-config")
    if options.get("binarize") and config.decoder != "bernoulli":
        raise ConfigError("--binarize trains a Bernoulli decoder on binary pixels; --decoder "
                          f"{config.decoder} is a density on 8-bit pixels: choose one")
    dry_build(partial(VAE, config), "--model-config")  # its size, against memory
    return config


def recipe(model_config: VAEConfig) -> dict:
    """The seed's recipe: Adam 1e-3, batch 64, constant learning rate, no EMA."""
    return {"batch_size": 64, "lr": 1e-3, "lr_schedule": "constant", "epochs": 10}


def training_plan(request: TrainingRequest) -> TrainingPlan:
    model_config = request.model_config
    return TrainingPlan(VAEObjective(model_config, binarize=bool(request.options.get("binarize"))),
                        partial(VAE, model_config), save_weights, request.train_config,
                        f"{model_config.model_type} on {request.dataset.name}")


OPTIONS = (
    Option("binarize", False, "dynamically binarize pixels (the binarized-MNIST likelihood protocol)", switch=True),
    Option("decoder", None, "p(x|z): bernoulli (default, the seed's) or discretized-logistic, a density on 8-bit "
           "pixels with bits/dim comparable to diffusion's and flows'", choices=("bernoulli", "discretized-logistic")),
    Option("tsne", False, "latent.png by t-SNE instead of PCA", switch=True),
)
SUMMARY = {"en": "VAEs sample in one decoder pass but blur.", "zh": "VAE 一次解码即可采样，但图像模糊。"}
# the optimizer steps a 15-minute budget bought on the 2-core CPU of README's first table (quickstart --work fixed)
FAMILY = Family(config_class=VAEConfig, build_config=build_model_config, recipe=recipe, plan=training_plan,
                load=VAERun.load, figures=write_vae_figures, options=OPTIONS, share=0.06, fixed_steps=5755,
                summary=SUMMARY, smallest={"hidden": 32, "latent": 4},
                model_config_help='{"hidden": 400, "latent": 20}')
CVAE_FAMILY = replace(FAMILY, fixed_steps=4369, labels_needed=True)  # conditional: VAEConfig.conditional set
