"""Issue 39: GPU numbers, ready to take. One prepared script for a lent GPU (under 8 minutes):

    uv run python -m benchmarks.gpu            # on a GPU machine; prints a JSON and a Markdown table
    uv run python -m benchmarks.gpu --tiny     # tiny networks on the CPU, seconds: what the tests run

For the fast, seed and flow recipes: training images/s at batches up to 1,024 in fp32 and bf16 autocast, the
achieved share of the chip's measured bf16 matmul peak (FLOPs counted by torch's FlopCounterMode), sampling
images/s (the fast UNet's flow sampler at 8 steps and the seed's DDPM at 1,000 steps, timed over 20 of them),
and the time of the seed's full recipe, 100 epochs of MNIST at batch 64 (93,750 steps), from its measured step.
Nothing is downloaded: the images are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import time

import torch

from benchmarks.harness import commit, cpu_description, log, write_results

SEED_RECIPE_STEPS = 100 * 60000 // 64  # the course project's 100 epochs of MNIST at batch 64


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_peak(device: torch.device, size: int) -> float:
    """Best bf16 matmul TFLOP/s of a size^3 product: what the training steps are a share of."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(10):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e12)
    return best


def recipes(tiny: bool) -> dict:
    """name -> (objective, model factory): the fast and seed diffusion presets and flow matching."""
    from vaediff.families.diffusion import TINY_UNET
    from vaediff.models.unet import ClassConditionalUNet, DiffusionConfig, preset_config
    from vaediff.objectives.diffusion import DiffusionObjective
    from vaediff.objectives.flow import FlowObjective

    def config(preset: str) -> DiffusionConfig:
        return preset_config(preset, dict(TINY_UNET) if tiny else None, "benchmarks.gpu")

    fast, seed = config("fast"), config("seed")
    return {"fast": (DiffusionObjective(fast), lambda: ClassConditionalUNet(fast)),
            "seed": (DiffusionObjective(seed), lambda: ClassConditionalUNet(seed)),
            "flow": (FlowObjective(fast), lambda: ClassConditionalUNet(fast))}


def step_seconds(objective, model, batch: int, device: torch.device, precision: str, steps: int) -> tuple[float, float]:
    """(seconds per training step, FLOPs per step) of `model` at `batch` random images under `precision`."""
    from torch.utils.flop_counter import FlopCounterMode

    from vaediff.objectives import BatchRandom

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    images = torch.rand(batch, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)

    def step(index: int) -> None:
        draw = BatchRandom(0, index, batch, slice(None), device, progress=1.0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = objective.losses(model, images, labels, draw)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step(0)
    step(1)
    synchronize(device)
    started = time.perf_counter()
    for index in range(steps):
        step(index + 2)
    synchronize(device)
    return (time.perf_counter() - started) / steps, counter.get_total_flops()


def sampling(model, device: torch.device, count: int, timed_steps: int) -> dict:
    """Images/s of the flow sampler (8 Euler steps) and of the seed's DDPM over 1,000 steps (timed over
    `timed_steps` of them), both the fast UNet's network passes with guidance (two passes a step)."""
    model.eval()
    noise = torch.randn(count, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (count,), device=device)
    with torch.inference_mode():
        model(noise, torch.full((count,), 500.0, device=device), labels)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        for t in range(timed_steps):
            model(torch.cat([noise, noise]), torch.full((2 * count,), 999.0 - t, device=device), labels.repeat(2))
        synchronize(device)
    per_step = (time.perf_counter() - started) / timed_steps
    return {"flow_8_steps_images_per_s": round(count / (8 * per_step), 1),
            "ddpm_1000_steps_images_per_s": round(count / (1000 * per_step), 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny networks and batches on the CPU (the tests)")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what vaediff's training does on CUDA for fp32
        torch.backends.cudnn.allow_tf32 = True
    batches, steps = ((8, 16), 2) if args.tiny else ((64, 256, 1024), 10)
    peak = bf16_peak(device, 256 if args.tiny else 8192)
    results: dict = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(), "device": device_name(device),
                     "commit": commit(), "tiny": args.tiny, "bf16_peak_tflops": round(peak, 2), "training": {}}
    for name, (objective, build) in recipes(args.tiny).items():
        for batch in batches:
            for precision in ("fp32", "bf16"):
                torch.manual_seed(0)
                seconds, flops = step_seconds(objective, build().to(device).train(), batch, device, precision, steps)
                key = f"{name}/{batch}/{precision}"
                results["training"][key] = {"images_per_s": round(batch / seconds, 1),
                                            "percent_of_bf16_peak": round(100 * flops / seconds / 1e12 / peak, 1)}
                log(f"{key}: {batch / seconds:,.0f} images/s")
    objective, build = recipes(args.tiny)["seed"]
    torch.manual_seed(0)
    seed_step, _ = step_seconds(objective, build().to(device).train(), 64, device, "fp32", steps)
    results["seed_recipe_hours"] = round(SEED_RECIPE_STEPS * seed_step / 3600, 2)
    torch.manual_seed(0)
    results["sampling"] = sampling(recipes(args.tiny)["fast"][1]().to(device), device, 16 if args.tiny else 1024,
                                   2 if args.tiny else 20)
    rows = "".join(f"| {key} | {value['images_per_s']:,.1f} | {value['percent_of_bf16_peak']} |\n"
                   for key, value in results["training"].items())
    text = (f"# GPU numbers: {results['device']}\n\nbf16 matmul peak {peak:.1f} TFLOP/s\n\n"
            f"| recipe/batch/precision | training images/s | % of bf16 peak |\n|---|---|---|\n{rows}\n"
            f"Sampling: {results['sampling']}. The seed's full recipe (100 epochs of MNIST, batch 64, fp32): "
            f"{results['seed_recipe_hours']} h.\n")
    if args.tiny:  # the tests' run: printed, never written into benchmarks/results
        print(json.dumps(results, indent=2))
        print(text)
    else:
        write_results(results, "gpu", text)
    return results


if __name__ == "__main__":
    main()
