"""95% intervals for the sample-quality numbers, by a bootstrap over the generated samples.

The real reference is fixed (it is the yardstick, not what is measured). Each of B resamples draws n of the
n samples with replacement (seeded) and recomputes every metric; the interval is the 2.5th and 97.5th
percentile of the B values (the percentile interval, Efron & Tibshirani 1993, ch. 13). A resample is held
as counts (how often each sample is drawn), so each metric over all B resamples is one matrix product with
per-sample quantities computed once: the bootstrap costs a small fraction of an evaluation.

k-NN radii are those of the full sets (a resample with repeated samples would otherwise give zero radii).
Three metrics have a bootstrap that is biased, because a resample holds only about 63% distinct samples:
recall and coverage count real points inside a union of the samples' balls, so their bootstrap values sit
low; FID sees a resample as less diverse than the set, so its bootstrap values sit high (measured on two
Gaussian clouds of 1,000 points: 1.5 bootstrap standard deviations above the estimate). Their interval keeps
the bootstrap's spread but is shifted so the bootstrap's mean falls on the estimate (`centred_on`), which is
said in metrics.json. The other metrics' bootstrap means lie within 0.35 standard deviations of their
estimates.
"""

from __future__ import annotations

import contextlib
import math

import torch

from vaediff.metrics import inception_score, kth_neighbour_distances

RESAMPLES = 200
LEVEL = 0.95
CENTRED = ("fid", "recall", "coverage")  # metrics whose bootstrap is biased (module docstring)
# the values each metric can take: an interval never reaches outside them (a shifted or tiny-sample interval
# would: recall 1 [0.745, 1.145] at 10 samples)
RANGES = {"fid": (0.0, None), "precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, None),
          "coverage": (0.0, 1.0), "is": (1.0, None), "class_accuracy": (0.0, 1.0), "cas": (0.0, 1.0)}


def method(resamples: int = RESAMPLES) -> dict:
    """How the intervals were made, for metrics.json beside them."""
    return {"method": "percentile bootstrap over the generated samples, the real reference fixed",
            "level": LEVEL, "resamples": resamples, "centred_on_estimate": list(CENTRED)}


def resample_counts(n: int, resamples: int, seed: int) -> torch.Tensor:
    """(resamples, n) counts: row b says how often each of n samples is drawn in resample b."""
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randint(n, (resamples, n), generator=generator)
    return torch.zeros(resamples, n).scatter_add_(1, drawn, torch.ones(resamples, n))


def percentile_interval(values: torch.Tensor, level: float = LEVEL) -> list[float]:
    tail = (1 - level) / 2
    low, high = torch.quantile(values.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return [float(low), float(high)]


def quality_intervals(real_features: torch.Tensor, matched_real: torch.Tensor, features: torch.Tensor,
                      probabilities: torch.Tensor, labels: torch.Tensor | None, seed: int = 0,
                      resamples: int = RESAMPLES, real_term: float | None = None) -> dict[str, list[float]]:
    """{metric: [low, high]} for fid, kid, precision, recall, density, coverage, is (and class_accuracy when
    the samples have labels), as metrics.py and evaluate.quality_metrics define them."""
    counts = resample_counts(len(features), resamples, seed + 104729)
    fid_and_estimate = fid_values(real_features, features, torch.cat([counts, torch.ones(1, len(features))]))
    values = {"fid": fid_and_estimate[:-1], "fid_estimate": fid_and_estimate[-1],
              "kid": kid_values(real_features, features, counts, real_term),
              **neighbourhood_values(matched_real, features, counts),
              "is": is_values(probabilities, counts, seed)}
    if labels is not None:
        correct = (probabilities.argmax(dim=1) == labels).float()
        values["class_accuracy"] = counts @ correct / len(features)
    intervals = {name: percentile_interval(value) for name, value in values.items() if not name.endswith("_estimate")}
    for name in CENTRED:
        intervals[name] = centred_on(values[name], float(values[f"{name}_estimate"]))
    return {name: within_range(name, interval) for name, interval in intervals.items()}


def within_range(name: str, interval: list[float]) -> list[float]:
    """`interval` clipped to the values metric `name` can take (RANGES; unbounded if not listed)."""
    low, high = RANGES.get(name, (None, None))
    low, high = -math.inf if low is None else low, math.inf if high is None else high
    return [min(max(value, low), high) for value in interval]


def enclosing(interval: list[float], estimate: float) -> list[float]:
    """`interval` widened to hold its estimate: with few samples a percentile interval can miss it, and an
    interval that excludes the number it stands beside is read as a contradiction."""
    return [min(interval[0], estimate), max(interval[1], estimate)]



def centred_on(values: torch.Tensor, estimate: float, level: float = LEVEL) -> list[float]:
    """The percentile interval moved so that the bootstrap's mean falls on the estimate."""
    low, high = percentile_interval(values, level)
    shift = estimate - float(values.double().mean())
    return [low + shift, high + shift]


@contextlib.contextmanager
def one_thread():
    """Run small linear-algebra calls on one thread: a 128x128 eigensolve is many tiny parallel regions, and
    when another process shares the cores their threads spin against each other (measured here: 200
    eigensolves took 150 s on two threads beside a busy process, 0.16 s on one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fid_values(real: torch.Tensor, fake: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """FID of each resample: the weighted mean and (n - 1)-normalised covariance of the drawn features.

    FID = |mu_f - mu_r|^2 + tr(C_f) + tr(C_r) - 2 tr((C_r C_f)^(1/2)), with the trace of the square root
    from the eigenvalues of the symmetric C_r^(1/2) C_f C_r^(1/2) (the same as those of C_r C_f): one batched
    symmetric eigensolve a resample, where the general one (torchmetrics' `_compute_fid`) took 0.2 s a
    resample on 20 samples' rank-deficient covariances."""
    real, fake, weights = real.double(), fake.double(), counts.double()
    real_mean, real_cov = real.mean(dim=0), torch.cov(real.T)
    n = len(fake)
    means = weights @ fake / n                                          # (B, d)
    # sum_i c_i x_i x_i^T, (B, d, d); 16 resamples at a time bound the (16, n, d) intermediate (200 MB at n = 10,000)
    second = torch.cat([(chunk.unsqueeze(2) * fake).transpose(1, 2) @ fake for chunk in weights.split(16)])
    covs = (second - n * means.unsqueeze(2) * means.unsqueeze(1)) / (n - 1)
    values, vectors = torch.linalg.eigh(real_cov)
    root = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T  # C_r^(1/2)
    products = root @ covs @ root
    products = (products + products.transpose(1, 2)) / 2  # symmetric up to rounding: make it exactly so
    with one_thread():
        trace_sqrt = torch.stack([torch.linalg.eigvalsh(p) for p in products]).clamp_min(0).sqrt().sum(dim=-1)
    mean_term = (means - real_mean).pow(2).sum(dim=-1)
    return mean_term + covs.diagonal(dim1=1, dim2=2).sum(-1) + real_cov.trace() - 2 * trace_sqrt


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel (Bińkowski et al. 2018): k(x, y) = (x.y / d + 1)^3."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def real_kernel_mean(real: torch.Tensor, chunk: int = 2048) -> float:
    """KID's real-real term: the mean of k over pairs of different real features. It depends on the
    reference alone, so evaluate.py computes it once per reference (curves score many sample sets)."""
    real = real.double()
    total = 0.0
    for start in range(0, len(real), chunk):  # the reference may hold 10,000 features: in blocks of rows
        block = real[start : start + chunk]
        self_similarity = ((block * block).sum(dim=1) / block.shape[1] + 1) ** 3  # k(x, x)
        total += float(_polynomial_kernel(block, real).sum() - self_similarity.sum())
    return total / (len(real) * (len(real) - 1))


def kid_values(real: torch.Tensor, fake: torch.Tensor, counts: torch.Tensor, real_term: float | None = None,
               chunk: int = 2048) -> torch.Tensor:
    """Unbiased MMD^2 with KID's kernel between the fixed real set and each resample of the fake one
    (`real_term`: real_kernel_mean(real), computed here when not given).

    A resample's fake-fake term averages k over pairs of draws of two different samples: with counts c,
    their sum is c^T K c - sum_i c_i^2 K_ii over n^2 - sum_i c_i^2 pairs (pairs of a sample with itself
    would add k(x, x), the kernel's largest values)."""
    real, fake, weights = real.double(), fake.double(), counts.double()
    m, n = len(real), len(fake)
    if real_term is None:
        real_term = real_kernel_mean(real)
    cross = torch.zeros(n, dtype=torch.float64)
    for start in range(0, m, chunk):
        cross += _polynomial_kernel(real[start : start + chunk], fake).sum(dim=0)
    fake_kernel = _polynomial_kernel(fake, fake)
    squares = (weights**2).sum(dim=1)
    pairs = ((weights @ fake_kernel) * weights).sum(dim=1) - weights**2 @ fake_kernel.diagonal()
    return real_term + pairs / (n * n - squares) - 2 * (weights @ cross) / (m * n)


def neighbourhood_values(real: torch.Tensor, fake: torch.Tensor, counts: torch.Tensor,
                         chunk: int = 2048) -> dict[str, torch.Tensor]:
    """Precision, recall (k = 3) and density, coverage (k = 5) of each resample (metrics.py's definitions),
    and "recall_estimate", "coverage_estimate": the full set's values, which CENTRED intervals sit on."""
    real, fake = real.float(), fake.float()
    n = len(fake)
    weights = torch.cat([counts, torch.ones(1, n)])  # the last row: every sample once (the estimate)
    real_radius_3, real_radius_5 = kth_neighbour_distances(real, 3), kth_neighbour_distances(real, 5)
    fake_radius_3 = kth_neighbour_distances(fake, 3)
    in_real_manifold = torch.zeros(n, dtype=torch.bool)  # per sample: inside some real k=3 ball
    in_real_balls = torch.zeros(n)                        # per sample: how many real k=5 balls hold it
    recalled, covered = torch.zeros(len(weights)), torch.zeros(len(weights))
    for start in range(0, len(real), chunk):
        distances = torch.cdist(real[start : start + chunk], fake)  # (real rows, n)
        in_real_manifold |= (distances <= real_radius_3[start : start + chunk, None]).any(dim=0)
        inside_5 = (distances <= real_radius_5[start : start + chunk, None]).float()
        in_real_balls += inside_5.sum(dim=0)
        # a real point is recalled (covered) by a resample when a drawn sample's ball (its own ball) holds it
        recalled += ((distances <= fake_radius_3[None, :]).float() @ weights.T > 0).float().sum(dim=0)
        covered += (inside_5 @ weights.T > 0).float().sum(dim=0)
    recall, coverage = recalled / len(real), covered / len(real)
    return {"precision": counts @ in_real_manifold.float() / n, "recall": recall[:-1], "recall_estimate": recall[-1],
            "density": counts @ in_real_balls / (5 * n), "coverage": coverage[:-1], "coverage_estimate": coverage[-1]}


def is_values(probabilities: torch.Tensor, counts: torch.Tensor, seed: int) -> torch.Tensor:
    """The Inception-score analogue of each resample (its own seeded split into ten parts)."""
    drawn = counts.long()
    return torch.tensor([inception_score(torch.repeat_interleave(probabilities, row, dim=0), seed=seed + b)[0]
                         for b, row in enumerate(drawn)])
