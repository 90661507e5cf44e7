"""The suite's speed sections: the matmul peak, data loading against the seed's loader, and the training
throughput of every model (run by benchmarks.run; `models` and `train_step` also serve profile_step and the
memory probe)."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.harness import log
from vaediff.data import Dataset


def matmul_peak() -> dict:
    """Best fp32 GFLOP/s of a 2048^3 matmul: the ceiling the training steps are measured against."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(5):
        a @ b
    best = 0.0
    for _ in range(30):  # the best of many: the CPU's clock wanders (one run here gave 146, another 120)
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048**3 / (time.perf_counter() - start) / 1e9)
    return {"matmul_peak_gflops": round(best, 1)}


def _write_idx_copy(dataset: Dataset, root: Path) -> Path:
    """The training split as torchvision's MNIST/raw/ IDX files, so its own class can read them."""
    import numpy as np

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = dataset.train.images[:, 0].numpy()
    labels = dataset.train.labels.to(torch.uint8).numpy()
    for name, array, magic in (("train-images-idx3-ubyte", images, 0x803), ("train-labels-idx1-ubyte", labels, 0x801)):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (raw / name).write_bytes(header + np.ascontiguousarray(array).tobytes())
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # torchvision checks all four exist
        shutil.copy(raw / name.replace("t10k", "train"), raw / name)
    return root


def _batches_per_second(loader, count: int) -> float:
    iterator = iter(loader)
    next(iterator)  # worker start-up and first-batch costs are not throughput
    start = time.perf_counter()
    done = 0
    while done < count:
        try:
            next(iterator)
            done += 1
        except StopIteration:
            iterator = iter(loader)
    return count / (time.perf_counter() - start)


def data_speed(dataset: Dataset, batches: int) -> dict:
    """vaediff's in-memory batches against the seed's loader: torchvision's MNIST class with ToTensor and a
    DataLoader with 4 workers (the seed's get_loader), on the same images."""
    import torchvision
    from torch.utils.data import DataLoader

    from vaediff.data import batch_loader

    ours = _batches_per_second(batch_loader(dataset.train, 64, seed=0), batches)
    with tempfile.TemporaryDirectory() as scratch:
        root = _write_idx_copy(dataset, Path(scratch))
        seed_set = torchvision.datasets.MNIST(str(root), train=True, download=False,
                                              transform=torchvision.transforms.ToTensor())
        results = {}
        with warnings.catch_warnings():  # "4 workers on 2 cores": the seed's setting, measured as it is
            warnings.simplefilter("ignore", UserWarning)
            for workers in (0, 4):
                loader = DataLoader(seed_set, batch_size=64, shuffle=True, num_workers=workers)
                results[workers] = _batches_per_second(loader, batches)
    return {"data_batches_per_second": {"vaediff": round(ours, 1), "torchvision_seed_4_workers": round(results[4], 1),
                                        "torchvision_0_workers": round(results[0], 1)},
            "data_loader_speedup": round(ours / results[4], 1)}


def models() -> dict:
    """name -> (objective, model factory) for every model and preset."""
    from vaediff.models.autoencoder import AdversarialAutoencoder, AutoencoderConfig, LatentAutoencoder
    from vaediff.models.unet import ClassConditionalUNet, preset_config
    from vaediff.models.vae import VAE, VAEConfig
    from vaediff.objectives.diffusion import DiffusionObjective, LatentDiffusionObjective
    from vaediff.objectives.vae import AutoencoderObjective, VAEObjective

    vae, cvae = VAEConfig(), VAEConfig(conditional=True)
    seed, fast, latent = preset_config("seed"), preset_config("fast"), preset_config("latent")
    autoencoder = AutoencoderConfig()
    frozen = LatentAutoencoder(autoencoder)
    return {
        "vae": (VAEObjective(vae), lambda: VAE(vae)),
        "cvae": (VAEObjective(cvae), lambda: VAE(cvae)),
        "diffusion-seed": (DiffusionObjective(seed), lambda: ClassConditionalUNet(seed)),
        "diffusion-fast": (DiffusionObjective(fast), lambda: ClassConditionalUNet(fast)),
        "latent-autoencoder": (AutoencoderObjective(autoencoder), lambda: AdversarialAutoencoder(autoencoder)),
        "latent-denoiser": (LatentDiffusionObjective(latent, frozen, 1.0), lambda: ClassConditionalUNet(latent)),
    }


def train_step(objective, model, optimizer, images, labels, step: int) -> None:
    """One training step: forward, backward, optimizer."""
    from vaediff.objectives import BatchRandom

    # progress 1: the last phase of training, every loss term on (the autoencoder's critic included)
    draw = BatchRandom(0, step, len(images), slice(None), torch.device("cpu"), progress=1.0)
    loss = objective.losses(model, images, labels, draw)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def training_throughput(dataset: Dataset, peak: float, seconds: float) -> dict:
    """Images per second and achieved GFLOP/s of a batch-64 training step (forward, backward, Adam)."""
    from torch.utils.flop_counter import FlopCounterMode

    images, labels = dataset.train.as_float(slice(0, 64)), dataset.train.labels[:64]
    out = {"train_images_per_second": {}, "train_gflops": {}, "train_gflop_per_step": {},
           "train_percent_of_peak": {}}
    for name, (objective, build) in models().items():
        torch.manual_seed(0)
        model = build()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
        with FlopCounterMode(display=False) as counter:
            train_step(objective, model, optimizer, images, labels, 0)
        flops = counter.get_total_flops()
        train_step(objective, model, optimizer, images, labels, 1)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or steps < 3:
            train_step(objective, model, optimizer, images, labels, steps + 2)
            steps += 1
        per_step = (time.perf_counter() - start) / steps
        gflops = flops / per_step / 1e9
        out["train_images_per_second"][name] = round(64 / per_step, 1)
        out["train_gflop_per_step"][name] = round(flops / 1e9, 2)
        out["train_gflops"][name] = round(gflops, 1)
        out["train_percent_of_peak"][name] = round(100 * gflops / peak, 1)
        log(f"throughput {name}: {64 / per_step:.0f} images/s, {gflops:.0f} GFLOP/s")
    return out
