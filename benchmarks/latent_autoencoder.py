"""Stage one of latent diffusion with and without its patch critic: reconstruction quality at equal steps.

    uv run python -m benchmarks.latent_autoencoder [--dataset fashion-mnist] [--steps 1500]
    uv run python -m benchmarks.latent_autoencoder --trajectory [--steps 2000] [--every 100] [--seed 0]

Both autoencoders train with stage one's recipe (`autoencoder_train_config`) for the same number of
optimizer steps, so the comparison holds on a busy machine too; the seconds each took are printed
beside. Their reconstructions of the first test images (posterior means, decoded) are scored by the
data set's evaluator: the reconstruction FID bounds what the latent diffusion model can reach.

--trajectory trains the default autoencoder once and scores it every `--every` steps from the critic's
start, twice: its live weights (those of that step) and the moving average that stage one exports.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open

from benchmarks.harness import write_results
from vaediff.data import load_dataset
from vaediff.evaluate import quality_metrics
from vaediff.evaluator_network import load_or_train_evaluator
from vaediff.families.latent import (
    LatentDiffusionConfig,
    autoencoder_train_config,
    load_autoencoder_weights,
    save_autoencoder,
)
from vaediff.models.autoencoder import AdversarialAutoencoder, AutoencoderConfig, LatentAutoencoder
from vaediff.objectives.vae import AutoencoderObjective
from vaediff.runs import load_safetensors
from vaediff.training import CHECKPOINT_FILE, TrainConfig, train

TAIL = 0.3  # --trajectory summarises the last 30% of training: where a --minutes budget may end


def measure(name: str, config: AutoencoderConfig, dataset, evaluator, steps: int, samples: int, work: Path) -> dict:
    train_config = autoencoder_train_config(TrainConfig(max_steps=steps), LatentDiffusionConfig(autoencoder=config))
    started = time.perf_counter()
    train(AutoencoderObjective(config), partial(AdversarialAutoencoder, config), dataset, train_config, work / name,
          export=save_autoencoder, title=f"autoencoder: {name}")
    seconds = time.perf_counter() - started
    images, labels = dataset.test.as_float(slice(0, samples)), dataset.test.labels[:samples]
    reconstructions = load_autoencoder_weights(config, work / name).reconstruct(images)
    metrics = quality_metrics(evaluator, reconstructions, labels, dataset)
    return {"autoencoder": name, "steps": steps, "train_seconds": round(seconds, 1),
            "reconstruction_fid": round(metrics["fid"], 3), "class_accuracy": round(metrics["class_accuracy"], 3),
            "mse": round(float(((reconstructions - images) ** 2).mean()), 5)}


class _ScoredAtEachCheckpoint:
    """Stage one's export, scoring at each checkpoint: the trainer first writes the live weights into
    the resume file, then hands `export` the module with its averaged weights swapped in."""

    def __init__(self, config: AutoencoderConfig, score, first_step: int):
        self.config, self.score, self.first_step, self.rows = config, score, first_step, []

    def export(self, module, run_dir: Path) -> None:
        save_autoencoder(module, run_dir)
        checkpoint = run_dir / CHECKPOINT_FILE
        with safe_open(str(checkpoint), "pt") as handle:
            step = json.loads((handle.metadata() or {})["state"])["step"]
        if step < self.first_step:
            return
        averaged = load_autoencoder_weights(self.config, run_dir)  # what stage one just exported
        live = LatentAutoencoder(self.config).eval()
        prefix = "model.autoencoder.vae."
        live.vae.load_state_dict({k.removeprefix(prefix): v for k, v in load_safetensors(checkpoint).items()
                                  if k.startswith(prefix)})
        self.rows.append({"step": step, "live_fid": round(self.score(live), 3),
                          "averaged_fid": round(self.score(averaged), 3)})
        print(json.dumps(self.rows[-1]), flush=True)


def trajectory(dataset, evaluator, steps: int, every: int, samples: int, seed: int, work: Path) -> dict:
    model = LatentDiffusionConfig()
    config = model.autoencoder
    images, labels = dataset.test.as_float(slice(0, samples)), dataset.test.labels[:samples]

    def score(autoencoder) -> float:
        return quality_metrics(evaluator, autoencoder.reconstruct(images), labels, dataset)["fid"]

    scored = _ScoredAtEachCheckpoint(config, score, first_step=int(config.discriminator_start * steps))
    train_config = dataclasses.replace(autoencoder_train_config(TrainConfig(max_steps=steps, seed=seed), model),
                                       checkpoint_every=every)
    train(AutoencoderObjective(config), partial(AdversarialAutoencoder, config), dataset, train_config,
          work / "trajectory", export=scored.export, title="autoencoder trajectory")
    return {"ema_decay": model.autoencoder_ema_decay, "steps": steps, "every": every, "seed": seed,
            "rows": scored.rows, "last_30_percent": spread_at_the_end(scored.rows, steps)}


def spread_at_the_end(rows: list[dict], steps: int) -> dict:
    """Mean, spread and range of each score over the last TAIL of training: where a run that stops on
    a --minutes budget may end, so what the exported weights of such a run may score."""
    last = [row for row in rows if row["step"] >= (1 - TAIL) * steps]

    def spread(key: str) -> dict:
        values = torch.tensor([row[key] for row in last])
        return {"mean": round(float(values.mean()), 3), "std": round(float(values.std()), 3),
                "min": round(float(values.min()), 3), "max": round(float(values.max()), 3)}

    return {"live_fid": spread("live_fid"), "averaged_fid": spread("averaged_fid")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps of each autoencoder")
    parser.add_argument("--samples", type=int, default=1000, help="test images reconstructed and scored")
    parser.add_argument("--trajectory", action="store_true",
                        help="score live and averaged weights along one training run instead")
    parser.add_argument("--every", type=int, default=100, help="--trajectory: steps between scores")
    parser.add_argument("--seed", type=int, default=0, help="--trajectory: training seed")
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.every <= 0 or args.samples <= 1:
        parser.error("--steps and --every must be positive and --samples at least 2")
    dataset = load_dataset(args.dataset)
    evaluator = load_or_train_evaluator(dataset)
    if args.trajectory:
        return _trajectory_main(args, argv, dataset, evaluator)
    default = AutoencoderConfig()
    variants = {"likelihood only": dataclasses.replace(default, adversarial_weight=0.0),
                "with patch critic (default)": default}
    work = Path(tempfile.mkdtemp(prefix="vaediff-autoencoder-"))
    try:
        rows = [measure(name, config, dataset, evaluator, args.steps, args.samples, work)
                for name, config in variants.items()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    real = quality_metrics(evaluator, dataset.test.as_float(slice(0, args.samples)), dataset.test.labels[: args.samples], dataset)
    result = {"date": datetime.date.today().isoformat(), "dataset": dataset.name, "threads": torch.get_num_threads(),
              "command": "python -m benchmarks.latent_autoencoder " + " ".join(argv if argv is not None else sys.argv[1:]),
              "real_test_images_fid": round(real["fid"], 3), "rows": rows}
    columns = list(rows[0])
    table = "\n".join([f"# Latent autoencoder with and without its critic, {result['date']}, {dataset.name}", "",
                       f"`{result['command']}`; real test images: FID {result['real_test_images_fid']}", "",
                       "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
                       *("| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows)]) + "\n"
    write_results(result, "latent-autoencoder", table)
    return 0


def _trajectory_main(args, argv, dataset, evaluator) -> int:
    work = Path(tempfile.mkdtemp(prefix="vaediff-autoencoder-"))
    try:
        result = trajectory(dataset, evaluator, args.steps, args.every, args.samples, args.seed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python -m benchmarks.latent_autoencoder " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"date": datetime.date.today().isoformat(), "dataset": dataset.name,
              "threads": torch.get_num_threads(), "command": command, **result}
    write_trajectory(result, args.samples)
    return 0


def write_trajectory(result: dict, samples: int) -> None:
    summary = "; ".join(f"{name} mean {v['mean']}, std {v['std']}, range {v['min']}-{v['max']}"
                        for name, v in result["last_30_percent"].items())
    lines = [f"# Latent autoencoder: live against averaged weights, {result['date']}, {result['dataset']}", "",
             f"`{result['command']}`; reconstruction FID of {samples} test images; averaged: EMA with decay up to "
             f"{result['ema_decay']}", "", "| step | live weights | averaged (exported) |", "|---|---|---|",
             *(f"| {row['step']} | {row['live_fid']} | {row['averaged_fid']} |" for row in result["rows"]), "",
             f"Over the last {TAIL:.0%} of training (steps >= {(1 - TAIL) * result['steps']:g}): {summary}"]
    write_results(result, f"latent-autoencoder-trajectory-seed{result['seed']}", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
