"""One model's peak resident memory of sampling and of training, measured in a process of its own.

Sampling 500 images first, then two training steps (batch 64): a process's peak only grows. The suite's
memory section (benchmarks.memory) starts one per model. Prints one JSON line, in MB:
{"sample": ..., "train": ..., "data_mb": ...} (data_mb: the data set loaded into memory).

    uv run python -m benchmarks.memory_probe MODEL DATASET

MODEL is one of benchmarks.speed's models (vae, cvae, diffusion-seed, diffusion-fast, latent-autoencoder,
latent-denoiser).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks.speed import models, train_step
from vaediff.data import load_dataset


def peak_mb() -> float:
    """VmHWM, the peak of this process's own memory: ru_maxrss would include the parent's peak from before
    exec."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def probe(model: str, dataset_name: str) -> dict:
    before = rss_mb()
    dataset = load_dataset(dataset_name)
    data_mb = rss_mb() - before
    objective, build = models()[model]
    net = build()
    labels = torch.arange(500) % 10
    with torch.inference_mode():  # sampling first: its peak is what inference costs
        if model.startswith("diffusion") or model == "latent-denoiser":
            from vaediff.families.diffusion import DiffusionRun

            cfg = objective.config
            run = DiffusionRun(None, {}, cfg, net.eval())
            if model == "latent-denoiser":
                from vaediff.families.latent import LatentDiffusionRun

                run = LatentDiffusionRun(None, {}, cfg, net.eval(), objective.autoencoder, 1.0)
            run.generate(500, labels, torch.Generator(), steps=1)
        elif model in ("vae", "cvae"):
            net.decode(torch.randn(500, net.config.latent), labels if net.config.conditional else None)
        else:  # the training module wraps the autoencoder and its critic; sampling uses the decoder alone
            net.autoencoder.decode(torch.randn(500, 4, 7, 7))
    sample_peak = peak_mb()
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), foreach=True)
    for step in range(2):  # the second step holds Adam's state as well: the steady-state peak
        train_step(objective, net, optimizer, dataset.train.as_float(slice(0, 64)), dataset.train.labels[:64], step)
    return {"sample": sample_peak, "train": peak_mb(), "data_mb": data_mb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model name of benchmarks.speed.models()")
    parser.add_argument("dataset", help="the data set to load (its size in memory is reported too)")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.model, args.dataset)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
