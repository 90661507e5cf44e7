"""FID and KID in Inception-v3 features, the space papers report them in, from weights the user has on disk.

The network is torch-fidelity's `FeatureExtractorInceptionV3`: the TensorFlow Inception graph of the original
FID code (Heusel et al. 2017) converted to PyTorch, with its pool3 features (2,048 numbers). It takes uint8
RGB images and resizes them to 299x299 itself, bilinearly as TensorFlow 1.x did, so grey images are repeated
to three channels and [0, 1] images rounded to uint8 first, as the reference implementation reads PNGs. The
distances are the same torchmetrics FID and KID, and the same bootstrap intervals, as in the evaluator's
features (metrics.py, intervals.py): only the feature space differs, and every number says which it is in.

Nothing is downloaded: `--inception-weights PATH` names the file torch-fidelity publishes. Features of the
real reference are cached on disk, keyed by the weights and the images, since on a CPU they take minutes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from vaediff import devices
from vaediff import metrics as m
from vaediff.console import progress_bar
from vaediff.errors import ConfigError
from vaediff.intervals import centred_on, kid_values, percentile_interval, resample_counts, within_range
from vaediff.runs import atomic_save_safetensors

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
PUBLISHED_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries its hash's first digits
FEATURE_SPACE = "Inception-v3 pool3 (2048-d, torch-fidelity's port of the TensorFlow FID network)"
INCEPTION_TENSORS = 566  # entries of FeatureExtractorInceptionV3's state dict
FEATURES = ("evaluator", "inception")  # the --features choices
FID_RESAMPLES = 50  # a 2048-d FID per resample is one 2048x2048 eigensolve: fewer resamples than the evaluator's


@dataclass(frozen=True)
class InceptionNetwork:
    """The loaded network and what identifies its weights (the cache key, and whether they are the
    published ones, without which the numbers are not comparable with papers)."""

    net: torch.nn.Module
    path: Path
    sha256: str

    @property
    def published(self) -> bool:
        return self.sha256.startswith(PUBLISHED_SHA256_PREFIX)

    def describe(self) -> dict:
        return {"feature_space": FEATURE_SPACE, "weights": self.path.name, "weights_sha256": self.sha256,
                "published_weights": self.published,
                "preprocessing": "[0, 1] -> uint8, grey repeated to RGB, bilinear resize to 299x299 "
                                 "(TensorFlow 1.x style, torch-fidelity)"}


def missing_weights_message(flag: str = "--inception-weights") -> str:
    return (f"Inception FID needs the file {WEIGHTS_FILE} (torch-fidelity's Inception-v3, published at "
            f"{WEIGHTS_URL}); download it where you are online and pass {flag} PATH")


def check_features(features: str, weights: str | Path | None) -> None:
    """One line, before any work, for a feature space that cannot be computed as asked."""
    if features not in FEATURES:
        raise ConfigError(f"--features {features!r}: choose {' or '.join(FEATURES)}")
    if features == "inception" and weights is None:
        raise ConfigError(missing_weights_message())
    if features == "evaluator" and weights is not None:
        raise ConfigError("--inception-weights is read with --features inception; add it, or drop the weights")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"--inception-weights {weights}: no such file. " + missing_weights_message())


def load_inception(weights: str | Path) -> InceptionNetwork:
    """torch-fidelity's Inception-v3 with the weights in `weights`; a file that is not those weights (another
    network, a truncated download, not a PyTorch file) is refused in one line."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"--inception-weights {path}: no such file. " + missing_weights_message())
    try:  # weights_only first: an arbitrary pickle is never executed
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"--inception-weights {path} is not a PyTorch weights file ({type(exc).__name__}); "
                          f"expected {WEIGHTS_FILE} from {WEIGHTS_URL}") from None
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    except Exception:  # load_state_dict's error lists hundreds of keys: the count says it
        found = f"{len(state)} tensors" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ConfigError(f"--inception-weights {path} does not hold Inception-v3's weights ({found}, where it "
                          f"has {INCEPTION_TENSORS}); expected {WEIGHTS_FILE} from {WEIGHTS_URL}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return InceptionNetwork(net.eval().to(devices.compute_device()), path, digest)


@torch.inference_mode()
def inception_features(network: InceptionNetwork, images: torch.Tensor, batch_size: int = 50,
                       progress: bool = False, desc: str = "Inception features") -> torch.Tensor:
    """(N, 2048) float64 pool3 features of (N, C, S, S) images in [0, 1] (C = 1 or 3), or uint8."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    device = next(network.net.parameters()).device
    chunks = []
    bar = progress_bar(total=len(images), desc=desc, unit="img", enabled=progress)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if batch.dtype != torch.uint8:  # as a PNG of the image would hold it
            batch = (batch.float().clamp(0, 1) * 255).round().to(torch.uint8)
        batch = batch.expand(-1, 3, -1, -1).contiguous() if batch.shape[1] == 1 else batch
        chunks.append(network.net(batch.to(device))[0].double().cpu())
        bar.update(len(batch))
    bar.close()
    return torch.cat(chunks) if chunks else torch.zeros(0, 2048, dtype=torch.float64)


def image_seconds(network: InceptionNetwork, images: torch.Tensor) -> float:
    """Seconds an image takes through the network here, timed on a batch after an untimed one."""
    inception_features(network, images[:2])
    started = time.perf_counter()
    inception_features(network, images[:8])
    return (time.perf_counter() - started) / len(images[:8])


def feature_cache_path(network: InceptionNetwork, images: torch.Tensor, cache_dir: Path) -> Path:
    """Where cached_features keeps the features of `images`: a key of the weights and the images' bytes."""
    digest = hashlib.sha1(network.sha256.encode())
    digest.update(images.contiguous().numpy().tobytes())
    return Path(cache_dir) / "inception" / f"{digest.hexdigest()}.safetensors"


def cached_features(network: InceptionNetwork, images: torch.Tensor, cache_dir: Path, progress: bool,
                    desc: str) -> torch.Tensor:
    """inception_features of real images, kept in `cache_dir` (feature_cache_path)."""
    path = feature_cache_path(network, images, cache_dir)
    if path.is_file():
        try:
            return load_file(path)["features"]
        except Exception:  # a damaged cache is computed again, not trusted
            pass
    features = inception_features(network, images, progress=progress, desc=desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors({"features": features.contiguous()}, path)  # a crash never leaves half a file
    return features


def fid_resamples(real: torch.Tensor, fake: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """FID of each resample (rows of `counts`), as intervals.fid_values computes it, for 2048-d features.

    With fewer samples n than dimensions d, the trace term comes from an n x n matrix instead of a d x d
    one: with Y = diag(sqrt(c)) (X - mu) the resample's covariance is Y^T Y / (n - 1), and the non-zero
    eigenvalues of C_r^(1/2) Y^T Y C_r^(1/2) are those of Y C_r Y^T (AB and BA share them). With n >= d,
    intervals.fid_values, two resamples at a time (its (B, n, d) intermediate is 160 MB a resample at n = 10,000)."""
    from vaediff.intervals import fid_values, one_thread

    n, dimensions = fake.shape
    if n >= dimensions:
        return torch.cat([fid_values(real, fake, block) for block in counts.split(2)])
    real, fake = real.double(), fake.double()
    real_mean, real_cov = real.mean(dim=0), torch.cov(real.T)
    values = []
    with one_thread():
        for weights in counts.double():
            mean = weights @ fake / n
            centred = weights.sqrt().unsqueeze(1) * (fake - mean)
            small = centred @ real_cov @ centred.T / (n - 1)
            trace_sqrt = torch.linalg.eigvalsh((small + small.T) / 2).clamp_min(0).sqrt().sum()
            values.append((mean - real_mean).pow(2).sum() + centred.pow(2).sum() / (n - 1) + real_cov.trace()
                          - 2 * trace_sqrt)
    return torch.stack(values)


def distances(real: torch.Tensor, fake: torch.Tensor, seed: int, intervals: bool = True) -> dict:
    """FID and KID between real and generated Inception features, and their 95% bootstrap intervals over the
    samples (intervals.py's method: FID's centred on the estimate; FID_RESAMPLES resamples for FID)."""
    fid = m.frechet_distance(real, fake)
    kid_mean, kid_std = m.kernel_distance(real, fake, seed=seed)
    result = {"fid": fid, "kid": {"mean": kid_mean, "std": kid_std}}
    if intervals:
        counts = resample_counts(len(fake), 200, seed + 104729)
        fid_values = fid_resamples(real, fake, counts[:FID_RESAMPLES])
        result["ci95"] = {"fid": within_range("fid", centred_on(fid_values, fid)),
                          "kid": percentile_interval(kid_values(real, fake, counts))}
    return result
