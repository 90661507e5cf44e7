"""Sample-quality metrics as pure functions of feature tensors (and pixels, for memorisation).

FID and KID come from torchmetrics with our evaluator as the custom feature extractor; precision,
recall, density and coverage are short implementations of their papers' definitions (tested against
hand-made cases in tests/test_metrics.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_confusion_matrix
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from vaediff.errors import DataError


class _Precomputed(nn.Module):
    """A 'feature extractor' that passes features through, so torchmetrics can take features we
    already computed (each image goes through the evaluator once for all metrics)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6)."""
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), reset_real_features=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel,
    mean and standard deviation over random subsets."""
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # its note that it keeps all features in memory: we know, they are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    mean, std = _seeded(metric.compute, seed)  # torchmetrics draws the subsets from the global generator
    return float(mean), float(std)


def kth_neighbour_distances(points: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set; one line (DataError) when
    the set has no k other points, as with a test split of a handful of images."""
    if len(points) <= k:
        raise DataError(f"precision, recall, density and coverage (k = {k} nearest neighbours) need at least "
                        f"{k + 1} images on each side, got {len(points)}: evaluate with more samples, and on a "
                        f"data set whose test split has at least {k + 1} images")
    radii = []
    for start in range(0, len(points), chunk):
        distances = torch.cdist(points[start : start + chunk], points)
        # k + 1: the smallest distance is the point to itself (0)
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _count_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                  chunk: int = 2048) -> torch.Tensor:
    """For each query: how many balls B(centre_i, radius_i) contain it."""
    counts = []
    for start in range(0, len(queries), chunk):
        distances = torch.cdist(queries[start : start + chunk], centres)
        counts.append((distances <= radii.unsqueeze(0)).sum(dim=1))
    return torch.cat(counts)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the share of fake samples inside the
    real manifold (union of k-NN balls of real features), and of real samples inside the fake one."""
    real, fake = real.float(), fake.float()
    precision = (_count_inside(fake, real, kth_neighbour_distances(real, k)) > 0).float().mean()
    recall = (_count_inside(real, fake, kth_neighbour_distances(fake, k)) > 0).float().mean()
    return float(precision), float(recall)


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, eqs. 3 and 4).

    density = (1 / kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]   (can exceed 1)
    coverage = (1 / N) sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]
    """
    real, fake = real.float(), fake.float()
    radii = kth_neighbour_distances(real, k)
    density = _count_inside(fake, real, radii).float().sum() / (k * len(fake))
    nearest_fake = []
    for start in range(0, len(real), 2048):
        nearest_fake.append(torch.cdist(real[start : start + 2048], fake).min(dim=1).values)
    covered = torch.cat(nearest_fake) <= radii
    return float(density), float(covered.float().mean())


def inception_score(probabilities: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) with the evaluator's class probabilities (Salimans et al. 2016), by
    torchmetrics: mean and standard deviation over `splits` random parts. 10 (the number of classes) is
    its maximum. The log-probabilities go in as the 'logits' (their softmax is the probabilities again)."""
    with warnings.catch_warnings():  # its note that it keeps all features in memory: we know, they are small
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=_Precomputed(probabilities.shape[1]), splits=splits)
    metric.update(torch.log(probabilities.double().clamp_min(1e-30)))
    with warnings.catch_warnings():  # one split has no spread: its std is NaN, reported as 0
        warnings.simplefilter("ignore", UserWarning)
        mean, std = _seeded(metric.compute, seed)  # torchmetrics permutes with the global generator
    return float(mean), float(std) if splits > 1 else 0.0


def _seeded(compute, seed: int):
    """Call `compute` with the global generator seeded, and leave the global generator as it was."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return compute()
    finally:
        torch.random.set_rng_state(state)


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Flattened float pixels in [0, 1], from uint8 (data as loaded) or float (samples)."""
    flat = images.flatten(1)
    return flat.float() / 255 if flat.dtype == torch.uint8 else flat.float()


def nearest_distances(queries: torch.Tensor, references: torch.Tensor, chunk: int = 1024,
                      reference_chunk: int = 10000) -> torch.Tensor:
    """Euclidean pixel distance (pixels in [0, 1]) from each query image to its nearest reference image.
    References are converted in blocks, so uint8 data sets never sit in memory whole as float."""
    best = torch.full((len(queries),), float("inf"))
    for ref_start in range(0, len(references), reference_chunk):
        flat_refs = _unit(references[ref_start : ref_start + reference_chunk])
        ref_norms = flat_refs.pow(2).sum(dim=1)
        for start in range(0, len(queries), chunk):
            q = _unit(queries[start : start + chunk])
            # |q - r|^2 = |q|^2 - 2 q.r + |r|^2, one matmul per chunk instead of a 3-d difference tensor
            squared = q.pow(2).sum(dim=1, keepdim=True) - 2 * q @ flat_refs.T + ref_norms.unsqueeze(0)
            best[start : start + chunk] = torch.minimum(best[start : start + chunk], squared.min(dim=1).values)
    return best.clamp_min(0).sqrt()


def memorisation(samples: torch.Tensor, train_images: torch.Tensor, test_images: torch.Tensor | None = None,
                 quantile: float = 0.05, test_distances: torch.Tensor | None = None) -> dict:
    """Share of samples closer to a training image than the `quantile` of held-out test images' distances
    to the training set. A model that does not copy its training set scores about `quantile`.
    `test_distances` (nearest_distances(test_images, train_images)) may be given instead of the images."""
    sample_distances = nearest_distances(samples, train_images)
    if test_distances is None:
        if test_images is None:
            raise ValueError("memorisation needs test_images or test_distances")
        test_distances = nearest_distances(test_images, train_images)
    threshold = float(torch.quantile(test_distances, quantile))
    return {
        "share_closer_than_test_p05": float((sample_distances < threshold).float().mean()),
        "threshold": threshold,
        "median_sample_distance": float(sample_distances.median()),
        "median_test_distance": float(test_distances.median()),
    }


def confusion_matrix(intended: torch.Tensor, predicted: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """counts[i, j]: samples drawn for class i that the evaluator calls class j (torchmetrics)."""
    return multiclass_confusion_matrix(predicted, intended, num_classes=classes)
