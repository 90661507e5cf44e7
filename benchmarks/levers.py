"""CPU speed levers for the fast diffusion preset, measured one at a time (docs/performance.md).

    uv run python benchmarks/levers.py [--compile]

Each lever is timed against the same baseline in the same process: training step time (batch 64) and
sampling throughput (network evaluations per second). `--compile` also times torch.compile (slow to
start: the first step compiles).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from vaediff.data import load_dataset
from vaediff.families.diffusion import DiffusionObjective
from vaediff.models.unet import ClassConditionalUNet, preset_config
from vaediff.train import BatchRandom


def step_seconds(model, objective, optimizer, images, labels, steps: int = 8, memory_format=None) -> float:
    if memory_format is not None:
        images = images.contiguous(memory_format=memory_format)

    def one(step: int) -> None:
        draw = BatchRandom(0, step, len(images), slice(None), torch.device("cpu"))
        loss = objective.losses(model, images, labels, draw)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    one(0)
    one(1)
    start = time.perf_counter()
    for step in range(steps):
        one(step + 2)
    return (time.perf_counter() - start) / steps


def evals_per_second(model, batch: int, repeats: int = 3, mode: str = "inference") -> float:
    x, t, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 1000, (batch,)), torch.randint(0, 11, (batch,))
    context = torch.inference_mode if mode == "inference" else torch.no_grad
    with context():
        model(x, t, y)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x, t, y)
    return batch * repeats / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    dataset = load_dataset("fashion-mnist")
    images, labels = dataset.train.images[:64] * 2 - 1, dataset.train.labels[:64]
    config = preset_config("fast")
    objective = DiffusionObjective(config)
    results: dict = {"threads": torch.get_num_threads()}

    def fresh():
        torch.manual_seed(0)
        return ClassConditionalUNet(config)

    def optimizer_for(model, **kwargs):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, **kwargs)

    model = fresh()
    results["train_step_s"] = {"baseline (AdamW foreach)": step_seconds(model, objective, optimizer_for(model, foreach=True), images, labels)}
    model = fresh()
    results["train_step_s"]["AdamW for-loop"] = step_seconds(model, objective, optimizer_for(model, foreach=False), images, labels)
    model = fresh()
    results["train_step_s"]["AdamW fused"] = step_seconds(model, objective, optimizer_for(model, fused=True), images, labels)
    model = fresh().to(memory_format=torch.channels_last)
    results["train_step_s"]["channels-last"] = step_seconds(model, objective, optimizer_for(model, foreach=True), images,
                                                             labels, memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = fresh()
    results["train_step_s"]["1 thread"] = step_seconds(model, objective, optimizer_for(model, foreach=True), images, labels)
    torch.set_num_threads(threads)
    attention = preset_config("fast", mid_block_attention=True)
    torch.manual_seed(0)
    model = ClassConditionalUNet(attention)
    results["train_step_s"]["with 7x7 mid-block attention"] = step_seconds(model, DiffusionObjective(attention),
                                                                           optimizer_for(model, foreach=True), images, labels)
    model = fresh().eval()
    results["sampling_evals_per_second"] = {f"batch {b}": evals_per_second(model, b) for b in (20, 100, 500, 1000)}
    results["sampling_evals_per_second"]["batch 500, no_grad instead of inference_mode"] = evals_per_second(model, 500, mode="no_grad")
    cl = fresh().eval().to(memory_format=torch.channels_last)
    results["sampling_evals_per_second"]["batch 500, channels-last"] = evals_per_second(cl, 500)
    if args.compile:
        model = fresh()
        compiled = torch.compile(model)
        optimizer = optimizer_for(model, foreach=True)
        start = time.perf_counter()
        draw = BatchRandom(0, 0, 64, slice(None), torch.device("cpu"))
        objective.losses(compiled, images, labels, draw)["loss"].backward()
        results["compile_first_step_s"] = time.perf_counter() - start
        results["train_step_s"]["torch.compile (after compiling)"] = step_seconds(compiled, objective, optimizer, images, labels)
    rounded = json.loads(json.dumps(results), parse_float=lambda v: round(float(v), 4))
    print(json.dumps(rounded, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
