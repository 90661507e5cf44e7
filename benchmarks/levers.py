"""CPU speed levers for the fast diffusion preset, measured one at a time (docs/performance.md).

    uv run python -m benchmarks.levers [--compile]

Each lever is timed against the same baseline in the same process: training step time (batch 64) and
sampling throughput (network evaluations per second). `--compile` also times torch.compile (slow to
start: the first step compiles).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from vaediff.data import load_dataset
from vaediff.models.unet import ClassConditionalUNet, preset_config
from vaediff.objectives import BatchRandom
from vaediff.objectives.diffusion import DiffusionObjective


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (median reported)")
    args = parser.parse_args()
    dataset = load_dataset("fashion-mnist")
    images, labels = dataset.train.as_float(slice(0, 64)) * 2 - 1, dataset.train.labels[:64]
    config = preset_config("fast")
    objective = DiffusionObjective(config)
    results: dict = {"threads": torch.get_num_threads()}

    def fresh():
        torch.manual_seed(0)
        return ClassConditionalUNet(config)

    def optimizer_for(model, **kwargs):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, **kwargs)

    def with_threads(count: int):
        def run(model, optimizer, memory_format=None):
            previous = torch.get_num_threads()
            torch.set_num_threads(count)
            try:
                return step_seconds(model, objective, optimizer, images, labels, memory_format=memory_format)
            finally:
                torch.set_num_threads(previous)
        return run

    attention = preset_config("fast", {"mid_block_attention": True})
    attention_objective = DiffusionObjective(attention)
    levers = {  # name -> (model, optimizer, memory format, objective)
        "baseline (AdamW foreach)": (fresh(), {"foreach": True}, None, objective),
        "AdamW for-loop": (fresh(), {"foreach": False}, None, objective),
        "AdamW fused": (fresh(), {"fused": True}, None, objective),
        "channels-last": (fresh().to(memory_format=torch.channels_last), {"foreach": True}, torch.channels_last, objective),
        "with 7x7 mid-block attention": (ClassConditionalUNet(attention), {"foreach": True}, None, attention_objective),
    }
    optimizers = {name: optimizer_for(model, **kwargs) for name, (model, kwargs, _, _) in levers.items()}
    timings: dict[str, list[float]] = {name: [] for name in levers}
    timings["1 thread"] = []
    one_thread = fresh()
    one_thread_optimizer = optimizer_for(one_thread, foreach=True)
    # Rounds, each lever once per round, median over rounds: the CPU's clock and the allocator drift over
    # minutes, and a lever measured once, first or last, would carry that drift.
    for _ in range(args.rounds):
        for name, (model, _, memory_format, lever_objective) in levers.items():
            timings[name].append(step_seconds(model, lever_objective, optimizers[name], images, labels,
                                              memory_format=memory_format))
        timings["1 thread"].append(with_threads(1)(one_thread, one_thread_optimizer))
    results["train_step_s"] = {name: statistics.median(values) for name, values in timings.items()}
    model = fresh().eval()
    results["sampling_evals_per_second"] = {f"batch {b}": evals_per_second(model, b) for b in (20, 100, 200, 500, 1000)}
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
