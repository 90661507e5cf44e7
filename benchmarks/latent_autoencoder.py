"""Stage one of latent diffusion with and without its patch critic: reconstruction quality at equal steps.

    uv run python benchmarks/latent_autoencoder.py [--dataset fashion-mnist] [--steps 1500]

Both autoencoders train with stage one's recipe (`autoencoder_train_config`) for the same number of
optimizer steps, so the comparison holds on a busy machine too; the seconds each took are printed
beside. Their reconstructions of the first test images (posterior means, decoded) are scored by the
data set's evaluator: the reconstruction FID bounds what the latent diffusion model can reach.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
import socket
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from vaediff.data import load_dataset
from vaediff.evaluate import quality_metrics
from vaediff.evaluator import load_or_train_evaluator
from vaediff.families.latent import (
    AdversarialAutoencoder,
    AutoencoderObjective,
    LatentDiffusionConfig,
    autoencoder_train_config,
    load_autoencoder_weights,
)
from vaediff.models.autoencoder import AutoencoderConfig
from vaediff.train import TrainConfig, train

RESULTS = Path(__file__).parent / "results"


def measure(name: str, config: AutoencoderConfig, dataset, evaluator, steps: int, samples: int, work: Path) -> dict:
    train_config = autoencoder_train_config(TrainConfig(max_steps=steps), LatentDiffusionConfig(autoencoder=config))
    started = time.perf_counter()
    train(AutoencoderObjective(config), partial(AdversarialAutoencoder, config), dataset, train_config, work / name,
          title=f"autoencoder: {name}")
    seconds = time.perf_counter() - started
    images, labels = dataset.test.images[:samples], dataset.test.labels[:samples]
    reconstructions = load_autoencoder_weights(config, work / name).reconstruct(images)
    metrics = quality_metrics(evaluator, reconstructions, labels, dataset)
    return {"autoencoder": name, "steps": steps, "train_seconds": round(seconds, 1),
            "reconstruction_fid": round(metrics["fid"], 3), "class_accuracy": round(metrics["class_accuracy"], 3),
            "mse": round(float(((reconstructions - images) ** 2).mean()), 5)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps of each autoencoder")
    parser.add_argument("--samples", type=int, default=1000, help="test images reconstructed and scored")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.dataset)
    evaluator = load_or_train_evaluator(dataset)
    default = AutoencoderConfig()
    variants = {"likelihood only": dataclasses.replace(default, adversarial_weight=0.0),
                "with patch critic (default)": default}
    work = Path(tempfile.mkdtemp(prefix="vaediff-autoencoder-"))
    try:
        rows = [measure(name, config, dataset, evaluator, args.steps, args.samples, work)
                for name, config in variants.items()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    real = quality_metrics(evaluator, dataset.test.images[: args.samples], dataset.test.labels[: args.samples], dataset)
    result = {"date": datetime.date.today().isoformat(), "dataset": dataset.name, "threads": torch.get_num_threads(),
              "command": "python benchmarks/latent_autoencoder.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "real_test_images_fid": round(real["fid"], 3), "rows": rows}
    columns = list(rows[0])
    table = "\n".join([f"# Latent autoencoder with and without its critic, {result['date']}, {dataset.name}", "",
                       f"`{result['command']}`; real test images: FID {result['real_test_images_fid']}", "",
                       "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
                       *("| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows)]) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{result['date']}-{socket.gethostname()}-latent-autoencoder"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table)
    print(json.dumps(result, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
