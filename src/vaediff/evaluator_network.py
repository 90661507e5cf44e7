"""The evaluator network: a small CNN classifier whose penultimate layer is the feature space of every
sample-quality metric (no Inception weights can be downloaded here, and Inception features of 28x28
digits say little anyway). Trained once per data set, deterministically, and cached.

It follows the data: 1 or 3 input channels, any number of classes, 28 to 64 pixels (an adaptive pooling
brings every size to the 7x7 map of the 28-pixel design, so MNIST's evaluators are unchanged). An unlabelled
set has no classes to learn, so its evaluator learns to tell how an image was rotated (0, 90, 180 or 270
degrees; Gidaris et al. 2018): a self-supervised task whose features still separate what the images show.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from vaediff import devices
from vaediff.console import progress_bar
from vaediff.data import Dataset, ImageSplit
from vaediff.errors import RunError
from vaediff.runs import (  # default_cache_dir: callers take it from here too
    atomic_save_safetensors,
    atomic_write_json,
    default_cache_dir,
    load_safetensors,
    load_state_strict,
)

RECIPE_VERSION = 2  # bump when the architecture or training recipe changes: old caches are then ignored
FEATURES = 128


ROTATIONS = 4  # the unlabelled sets' task: which of four quarter turns was applied


class EvaluatorNet(nn.Module):
    """Three conv blocks (28 -> 14 -> 7; larger images are pooled to 7x7) and a 128-d feature layer;
    `forward` returns features.

    The `num_features` attribute and features-from-forward are what torchmetrics' FID and KID expect
    of a custom feature extractor.
    """

    num_features = FEATURES

    def __init__(self, channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.channels, self.num_classes = channels, num_classes

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.body = nn.Sequential(block(channels, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 128),
                                  nn.AdaptiveAvgPool2d(7))  # the identity at 28 pixels
        self.features = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 7 * 7, FEATURES))
        self.head = nn.Sequential(nn.BatchNorm1d(FEATURES), nn.ReLU(), nn.Linear(FEATURES, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) in [0, 1] -> (N, 128) features (pre-activation: closer to Gaussian for FID)."""
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

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.inference_mode()
    def features_and_probabilities(self, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled 128-d features and class probabilities of (N, C, S, S) images in [0, 1]."""
        feats, probs = [], []
        for start in range(0, len(images), batch_size):
            feature = self.net(images[start : start + batch_size].to(self.device))
            feats.append((feature * self.feature_scale).cpu())
            probs.append(F.softmax(self.net.head(feature), dim=1).cpu())
        return torch.cat(feats), torch.cat(probs)


@torch.inference_mode()
def feature_scale(net: EvaluatorNet, split: ImageSplit, limit: int = 10000) -> float:
    """1 / RMS of the features of (up to `limit`) training images, so FID and KID read on a unit scale."""
    net.eval()
    device = next(net.parameters()).device
    features = torch.cat([net(split.as_float(slice(s, s + 1000)).to(device))
                          for s in range(0, min(limit, len(split)), 1000)])
    return float(1.0 / features.pow(2).mean().sqrt())


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to 2 pixels (pad, then crop at a random offset): cheap, label-preserving,
    and enough to close the accuracy gap on Fashion-MNIST and on the 4,000-image MNIST subset."""
    count, size = images.shape[0], images.shape[-1]
    padded = F.pad(images, (2, 2, 2, 2))
    offsets = torch.randint(0, 5, (2, count, 1), generator=generator)
    rows = (offsets[0] + torch.arange(size)).unsqueeze(2)  # (N, size, 1)
    cols = (offsets[1] + torch.arange(size)).unsqueeze(1)  # (N, 1, size)
    return padded.permute(0, 2, 3, 1)[torch.arange(count).view(-1, 1, 1), rows, cols].permute(0, 3, 1, 2)


def rotated(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each image turned by its number of quarter turns (the unlabelled sets' task)."""
    return torch.stack([torch.rot90(image, int(k), dims=(1, 2)) for image, k in zip(images, turns, strict=True)])


def task_batch(split: ImageSplit, index: torch.Tensor, labelled: bool, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, targets) of the evaluator's task: the labels, or for an unlabelled set random rotations."""
    images = split.as_float(index)
    if labelled:
        return images, split.labels[index]
    turns = torch.randint(0, ROTATIONS, (len(index),), generator=generator)
    return rotated(images, turns), turns


@torch.inference_mode()
def accuracy(net: EvaluatorNet, split: ImageSplit, labelled: bool = True) -> float:
    """Test accuracy on the evaluator's task (fixed rotations, seed 0, for an unlabelled set)."""
    net.eval()
    correct, generator, device = 0, torch.Generator().manual_seed(0), next(net.parameters()).device
    for start in range(0, len(split), 1000):
        images, targets = task_batch(split, torch.arange(start, min(start + 1000, len(split))), labelled, generator)
        correct += int((net.logits(images.to(device)).argmax(1).cpu() == targets).sum())
    return correct / len(split)


def default_image_passes(train_size: int) -> int:
    """4 epochs of 60,000 images; 20 of a small set (mnist-5k: 80,000 passes, 0.987 test accuracy in about
    a minute here; 240,000 gave 0.992 in three)."""
    return min(240_000, 20 * train_size)


def train_evaluator(dataset: Dataset, seed: int = 0, image_passes: int | None = None, batch_size: int = 128,
                    progress: bool = True, device: torch.device | None = None) -> tuple[EvaluatorNet, float]:
    """Train on the training split for `image_passes` images (default: `default_image_passes`), on `device`
    (default: the CPU). Batches and their augmentation are drawn on the CPU's generator, then moved, so a
    seed trains on the same batches anywhere."""
    if image_passes is None:
        image_passes = default_image_passes(len(dataset.train))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = device or torch.device("cpu")
    net = EvaluatorNet(dataset.shape.channels, dataset.num_classes if dataset.labelled else ROTATIONS).to(device)
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
        images, targets = task_batch(train, index, dataset.labelled, generator)
        loss = F.cross_entropy(net.logits(_augment(images, generator).to(device)), targets.to(device),
                               label_smoothing=0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    recalibrate_batchnorm(net, train)
    return net, accuracy(net, dataset.test, dataset.labelled)


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, split: ImageSplit, limit: int = 10000) -> None:
    """Replace BatchNorm's running statistics by exact averages over (up to `limit`) training images.

    The running averages lag behind the weights (momentum 0.1), which matters for short trainings;
    recomputing them with the final weights ("precise BN") removes that lag.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    net.train()
    device = next(net.parameters()).device
    for start in range(0, min(limit, len(split)), 500):
        net.logits(split.as_float(slice(start, start + 500)).to(device))
    for norm in norms:
        norm.momentum = 0.1
    net.eval()


def _cache_path(cache_dir: Path, dataset_name: str) -> Path:
    return cache_dir / "evaluators" / f"{dataset_name}-v{RECIPE_VERSION}"


def is_cached(dataset_key: str, cache_dir: str | Path | None = None) -> bool:
    """Whether a trained evaluator of this data set (`Dataset.key`) is in the cache (no training needed)."""
    directory = _cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), dataset_key)
    return (directory / "model.safetensors").is_file() and (directory / "evaluator.json").is_file()


def load_or_train_evaluator(dataset: Dataset, cache_dir: str | Path | None = None, retrain: bool = False,
                            progress: bool = True) -> Evaluator:
    """The cached evaluator of this data set, trained (a few CPU-minutes) and cached when missing."""
    directory = _cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), dataset.key)
    weights, info_path = directory / "model.safetensors", directory / "evaluator.json"
    if not retrain and weights.is_file() and info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
            net = EvaluatorNet(int(info.get("channels", 1)), int(info.get("num_classes", 10)))
            load_state_strict(net, load_safetensors(weights), weights)
            return Evaluator(net.eval().to(devices.compute_device()), float(info["test_accuracy"]), dataset.name, directory,
                             float(info["feature_scale"]))
        except (RunError, ValueError, KeyError, OSError):
            pass  # a damaged cache is retrained below, not trusted
    started = time.perf_counter()
    net, test_accuracy = train_evaluator(dataset, progress=progress, device=devices.compute_device())
    scale = feature_scale(net, dataset.train)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(net.state_dict(), weights)
    atomic_write_json(info_path, {"dataset": dataset.name, "test_accuracy": test_accuracy,
                                  "feature_scale": scale, "recipe_version": RECIPE_VERSION,
                                  "channels": net.channels, "num_classes": net.num_classes,
                                  "task": "classes" if dataset.labelled else "rotations",
                                  "train_seconds": round(time.perf_counter() - started, 1),
                                  "train_images": len(dataset.train), "test_images": len(dataset.test)})
    return Evaluator(net.to(devices.compute_device()), test_accuracy, dataset.name, directory, scale)
