"""The evaluator network: a small CNN classifier whose penultimate layer is the feature space of every
sample-quality metric (no Inception weights can be downloaded here, and Inception features of 28x28
digits say little anyway). Trained once per data set, deterministically, and cached.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from vaediff.console import progress_bar
from vaediff.data import Dataset, ImageSplit
from vaediff.errors import RunError
from vaediff.runs import atomic_save_safetensors, atomic_write_json, load_safetensors, load_state_strict

RECIPE_VERSION = 2  # bump when the architecture or training recipe changes: old caches are then ignored
FEATURES = 128


def default_cache_dir() -> Path:
    return Path(os.environ.get("VAEDIFF_CACHE_DIR", Path.home() / ".cache" / "vaediff"))


class EvaluatorNet(nn.Module):
    """Three conv blocks (28 -> 14 -> 7) and a 128-d feature layer; `forward` returns features.

    The `num_features` attribute and features-from-forward are what torchmetrics' FID and KID expect
    of a custom feature extractor.
    """

    num_features = FEATURES

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.body = nn.Sequential(block(1, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 128))
        self.features = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 7 * 7, FEATURES))
        self.head = nn.Sequential(nn.BatchNorm1d(FEATURES), nn.ReLU(), nn.Linear(FEATURES, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, 128) features (pre-activation: closer to Gaussian for FID)."""
        return self.features(self.body(images.float()))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward(images))


@dataclass
class Evaluator:
    net: EvaluatorNet
    accuracy: float
    dataset: str
    path: Path
    feature_scale: float = 1.0  # 1 / (RMS of training-set features): features of real data have unit scale

    @torch.inference_mode()
    def features_and_probabilities(self, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled 128-d features and class probabilities of (N, 1, 28, 28) images in [0, 1]."""
        feats, probs = [], []
        for start in range(0, len(images), batch_size):
            feature = self.net(images[start : start + batch_size])
            feats.append(feature * self.feature_scale)
            probs.append(F.softmax(self.net.head(feature), dim=1))
        return torch.cat(feats), torch.cat(probs)


@torch.inference_mode()
def feature_scale(net: EvaluatorNet, split: ImageSplit, limit: int = 10000) -> float:
    """1 / RMS of the features of (up to `limit`) training images, so FID and KID read on a unit scale."""
    net.eval()
    features = torch.cat([net(split.images[s : s + 1000]) for s in range(0, min(limit, len(split)), 1000)])
    return float(1.0 / features.pow(2).mean().sqrt())


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to 2 pixels (pad, then crop at a random offset): cheap, label-preserving,
    and enough to close the accuracy gap on Fashion-MNIST and on the 4,000-image MNIST subset."""
    count, size = images.shape[0], images.shape[-1]
    padded = F.pad(images, (2, 2, 2, 2))[:, 0]
    offsets = torch.randint(0, 5, (2, count, 1), generator=generator)
    rows = (offsets[0] + torch.arange(size)).unsqueeze(2)  # (N, size, 1)
    cols = (offsets[1] + torch.arange(size)).unsqueeze(1)  # (N, 1, size)
    return padded[torch.arange(count).view(-1, 1, 1), rows, cols].unsqueeze(1)


@torch.inference_mode()
def accuracy(net: EvaluatorNet, split: ImageSplit) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(split), 1000):
        logits = net.logits(split.images[start : start + 1000])
        correct += int((logits.argmax(1) == split.labels[start : start + 1000]).sum())
    return correct / len(split)


def default_image_passes(train_size: int) -> int:
    """4 epochs of 60,000 images; 20 of a small set (mnist-5k: 80,000 passes, 0.987 test accuracy in about
    a minute here; 240,000 gave 0.992 in three)."""
    return min(240_000, 20 * train_size)


def train_evaluator(dataset: Dataset, seed: int = 0, image_passes: int | None = None, batch_size: int = 128,
                    progress: bool = True) -> tuple[EvaluatorNet, float]:
    """Train on the training split for `image_passes` images (default: `default_image_passes`)."""
    if image_passes is None:
        image_passes = default_image_passes(len(dataset.train))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = EvaluatorNet()
    steps = max(1, image_passes // batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    train = dataset.train
    net.train()
    order = torch.randperm(len(train), generator=generator)
    position = 0
    for _ in progress_bar(range(steps), desc=f"evaluator for {dataset.name}", unit="step", enabled=progress):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(train), generator=generator), 0
        index = order[position : position + batch_size]
        position += batch_size
        images = _augment(train.images[index], generator)
        loss = F.cross_entropy(net.logits(images), train.labels[index], label_smoothing=0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    recalibrate_batchnorm(net, train.images)
    return net, accuracy(net, dataset.test)


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, images: torch.Tensor, limit: int = 10000) -> None:
    """Replace BatchNorm's running statistics by exact averages over (up to `limit`) training images.

    The running averages lag behind the weights (momentum 0.1), which matters for short trainings;
    recomputing them with the final weights ("precise BN") removes that lag.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    net.train()
    for start in range(0, min(limit, len(images)), 500):
        net.logits(images[start : start + 500])
    for norm in norms:
        norm.momentum = 0.1
    net.eval()


def _cache_path(cache_dir: Path, dataset_name: str) -> Path:
    return cache_dir / "evaluators" / f"{dataset_name}-v{RECIPE_VERSION}"


def is_cached(dataset_name: str, cache_dir: str | Path | None = None) -> bool:
    """Whether a trained evaluator of this data set is in the cache (so no training is needed)."""
    directory = _cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), dataset_name)
    return (directory / "model.safetensors").is_file() and (directory / "evaluator.json").is_file()


def load_or_train_evaluator(dataset: Dataset, cache_dir: str | Path | None = None, retrain: bool = False,
                            progress: bool = True) -> Evaluator:
    """The cached evaluator of this data set, trained (a few CPU-minutes) and cached when missing."""
    directory = _cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), dataset.name)
    weights, info_path = directory / "model.safetensors", directory / "evaluator.json"
    if not retrain and weights.is_file() and info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
            net = EvaluatorNet()
            load_state_strict(net, load_safetensors(weights), weights)
            return Evaluator(net.eval(), float(info["test_accuracy"]), dataset.name, directory,
                             float(info["feature_scale"]))
        except (RunError, ValueError, KeyError, OSError):
            pass  # a damaged cache is retrained below, not trusted
    started = time.perf_counter()
    net, test_accuracy = train_evaluator(dataset, progress=progress)
    scale = feature_scale(net, dataset.train)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(net.state_dict(), weights)
    atomic_write_json(info_path, {"dataset": dataset.name, "test_accuracy": test_accuracy,
                                  "feature_scale": scale, "recipe_version": RECIPE_VERSION,
                                  "train_seconds": round(time.perf_counter() - started, 1),
                                  "train_images": len(dataset.train), "test_images": len(dataset.test)})
    return Evaluator(net, test_accuracy, dataset.name, directory, scale)
