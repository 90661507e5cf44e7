"""vaediff's benchmark suite: speed and quality on this machine, the seed's configuration measured in the
same run as the baseline, ratios rather than bare seconds.

    uv run python benchmarks/run.py --quick     # < 10 minutes on a 2-core CPU: what closing notes quote
    uv run python benchmarks/run.py             # the full suite (about an hour on a 2-core CPU)

Writes benchmarks/results/<date>-<host>.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from vaediff.data import Dataset, load_dataset

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("peak", "data", "throughput", "quality", "sampling", "vae", "memory", "latent", "flow")
QUICK_SECTIONS = ("peak", "data", "throughput", "quality", "sampling", "vae", "memory")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_results(results: dict, kind: str, table: str, shown: dict | None = None) -> Path:
    """benchmarks/results/<date>-<host>[-kind].json (all of `results`) and .md (`table`); prints `shown`
    (default: the results) as JSON, then the table. Returns the path without its suffix."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    host = results.get("host") or socket.gethostname()
    stem = RESULTS / f"{results['date']}-{host}{'-' + kind if kind else ''}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table.rstrip("\n") + "\n")
    print(json.dumps(results if shown is None else shown, indent=2))
    print(table)
    return stem


# ---------------------------------------------------------------------------------------------------------
# Peak and data


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


# ---------------------------------------------------------------------------------------------------------
# Training throughput


def _models() -> dict:
    """name -> (objective, model factory, batch transform) for every model and preset."""
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


def _step(objective, model, optimizer, images, labels, step: int) -> None:
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
    for name, (objective, build) in _models().items():
        torch.manual_seed(0)
        model = build()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
        with FlopCounterMode(display=False) as counter:
            _step(objective, model, optimizer, images, labels, 0)
        flops = counter.get_total_flops()
        _step(objective, model, optimizer, images, labels, 1)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or steps < 3:
            _step(objective, model, optimizer, images, labels, steps + 2)
            steps += 1
        per_step = (time.perf_counter() - start) / steps
        gflops = flops / per_step / 1e9
        out["train_images_per_second"][name] = round(64 / per_step, 1)
        out["train_gflop_per_step"][name] = round(flops / 1e9, 2)
        out["train_gflops"][name] = round(gflops, 1)
        out["train_percent_of_peak"][name] = round(100 * gflops / peak, 1)
        log(f"throughput {name}: {64 / per_step:.0f} images/s, {gflops:.0f} GFLOP/s")
    return out


# ---------------------------------------------------------------------------------------------------------
# Quality: train for a budget, evaluate with vaediff's evaluator


REUSE_RUNS = False  # --keep-runs: a finished run already in the folder is measured again, not retrained


def _train(model_type: str, out: Path, dataset_name: str, minutes: float, options: dict):
    from vaediff.families import load_run, train_run

    if REUSE_RUNS and (out / "loss.csv").is_file() and (out / "config.json").is_file():
        log(f"reusing {out} (--keep-runs)")
        return load_run(out)

    # No sample grids after training: quality and speed are measured separately, on more samples.
    return train_run(model_type, out, dataset_name, options=options, train_options={"minutes": minutes},
                     overwrite=True, progress=False, figures=False)


def _quality(run, evaluator, dataset, count: int, options: dict) -> dict:
    """The report's curve point (report.quality_point), rounded for the table, seed 0."""
    from vaediff.report import quality_point

    point = quality_point(run, evaluator, dataset, count, 0, options)
    return {"class_accuracy": round(point["class_accuracy"], 4), "fid": round(point["fid"], 3),
            "kid": round(point["kid"], 4), "precision": round(point["precision"], 3),
            "recall": round(point["recall"], 3), "images_per_second": round(point["samples_per_second"], 2),
            "num_samples": count, **options,
            "ci95": {key: [round(bound, 4) for bound in point["ci95"][key]]
                     for key in ("fid", "class_accuracy") if point["ci95"].get(key)}}


def _comparison_settings(run) -> dict:
    """Both presets sample with DPM-Solver++ 10 steps, the fast preset with its guidance, the seed without
    (it has no null class; its own DDPM-1000 would take an hour per quality measurement). The sampler
    section measures the default sampler (20 steps) on the fast model beside it."""
    guidance = run.model_config.guidance if run.model_config.has_null_class else 1.0
    return run.sampler_settings("dpm", 10, guidance)


def time_to_quality(dataset: Dataset, budgets: list[float], samples: int, work: Path) -> tuple[dict, dict]:
    """fast and seed presets trained for each budget; class accuracy and FID of `samples` samples each."""
    from vaediff.evaluator_network import load_or_train_evaluator

    evaluator = load_or_train_evaluator(dataset, progress=False)
    table, runs = [], {}
    for minutes in budgets:
        for preset in ("fast", "seed"):
            log(f"training diffusion {preset} for {minutes} min")
            run = _train("diffusion", work / f"{preset}-{minutes:g}", dataset.name, minutes, {"preset": preset})
            run_dir = run.run_dir
            row = {"preset": preset, "minutes": minutes, "steps_trained": _steps_trained(run_dir),
                   **_quality(run, evaluator, dataset, samples, _comparison_settings(run))}
            table.append(row)
            runs[(preset, minutes)] = (run, row)
            log(f"  {preset} {minutes} min: accuracy {row['class_accuracy']:.3f}, FID {row['fid']:.2f}")
    final = max(budgets)
    (fast_run, fast), (seed_run, seed) = runs[("fast", final)], runs[("seed", final)]
    passing = [r["minutes"] for r in table if r["preset"] == "fast" and r["class_accuracy"] >= 0.90]
    summary = {"time_to_quality": table, "budget_minutes": final, "fast_class_accuracy": fast["class_accuracy"],
               "seed_class_accuracy": seed["class_accuracy"], "fast_fid": fast["fid"], "seed_fid": seed["fid"],
               "fast_vs_seed_fid_ratio": round(fast["fid"] / seed["fid"], 4),
               "fast_minutes_to_0.90": min(passing) if passing else None, "evaluator_accuracy": evaluator.accuracy}
    return summary, {"fast": fast_run, "seed": seed_run, "fast_quality_row": fast, "evaluator": evaluator}


def _steps_trained(run_dir: Path) -> int:
    import csv

    with (run_dir / "loss.csv").open() as handle:
        return int(list(csv.DictReader(handle))[-1]["step"])


def _images_per_second(run, options: dict, count: int, timed_steps: int) -> float:
    """Images per second of `options`, timing `timed_steps` of its steps: every step of DDPM costs one
    network evaluation (two with guidance), so 50 timed steps of 1000 scale exactly by 1/20."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 10
    start = time.perf_counter()
    run.generate(count, labels, generator, **{**options, "steps": timed_steps})
    return count / (time.perf_counter() - start) * timed_steps / options["steps"]


SAMPLER_PLAN = [("ddpm", 1000), ("ddim", 100), ("ddim", 50), ("dpm", 20), ("dpm", 10)]
SPEED_BATCH = 20  # the same small batch for every sampler and preset, as the issue times the seed's DDPM


def sampling(runs: dict, dataset: Dataset, samples: int, quick: bool) -> dict:
    """Speed of each sampler on both presets (a batch of 20), quality on the fast preset; the default
    sampler against the seed's DDPM-1000 on the seed network, and against DDIM-100 on the same model."""
    evaluator, measured = runs["evaluator"], runs["fast_quality_row"]
    table = []
    for preset in ("fast", "seed"):
        run = runs[preset]
        guidance = run.model_config.guidance if run.model_config.has_null_class else 1.0
        for sampler, steps in SAMPLER_PLAN:
            if quick and preset == "seed" and (sampler, steps) not in (("ddpm", 1000), ("dpm", 20)):
                continue
            options = {"sampler": sampler, "steps": steps, "guidance": guidance}
            timed = 50 if quick and steps == 1000 else steps
            row = {"preset": preset, **options, "timed_steps": timed,
                   "images_per_second": round(_images_per_second(run, options, SPEED_BATCH, timed), 3)}
            default = (sampler, steps) == (runs["fast"].model_config.sampler, runs["fast"].model_config.sampling_steps)
            if preset == "fast" and steps < 1000 and (not quick or steps == 100 or default):
                reuse = all(measured.get(k) == v for k, v in options.items()) and measured["num_samples"] == samples
                quality = measured if reuse else _quality(run, evaluator, dataset, samples, options)
                row.update({k: quality[k] for k in ("class_accuracy", "fid", "kid", "precision", "recall", "num_samples")})
            table.append(row)
            log(f"sampling {preset} {sampler}-{steps}: {row['images_per_second']:.3f} images/s"
                + (f", FID {row['fid']:.2f}, accuracy {row['class_accuracy']:.3f}" if "fid" in row else ""))
    pick = {(r["preset"], r["sampler"], r["steps"]): r for r in table}
    settings = runs["fast"].sampler_settings()
    default = pick[("fast", settings["sampler"], settings["steps"])]
    seed_ddpm = pick[("seed", "ddpm", 1000)]
    return {"sampling": table, "sampler_speedup": round(default["images_per_second"] / seed_ddpm["images_per_second"], 1),
            "sampler_fid_ratio": round(default["fid"] / pick[("fast", "ddim", 100)]["fid"], 4),
            "default_sampler": settings, "sampler_speed_batch": SPEED_BATCH}


# ---------------------------------------------------------------------------------------------------------
# VAE, memory, latent diffusion


def vae_section(dataset: Dataset, budgets: list[float], work: Path, iw_samples: int, test_images: int) -> dict:
    from vaediff.families.base import LikelihoodSettings

    nll = {}
    for minutes in budgets:
        run = _train("vae", work / f"vae-{minutes:g}", dataset.name, minutes, {})
        test = type(dataset.test)(dataset.test.images[:test_images], dataset.test.labels[:test_images])
        settings = LikelihoodSettings(iw_samples=iw_samples)
        nll[f"{minutes:g}"] = round(run.likelihood(test, settings, 0, progress=False)["nll_nats"], 2)
        log(f"vae {minutes} min: NLL {nll[f'{minutes:g}']} nats")
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    run.generate(10000, None, generator)
    return {"vae_nll_nats": nll, "vae_iw_samples": iw_samples, "vae_nll_test_images": len(test),
            "vae_sample_images_per_second": round(10000 / (time.perf_counter() - start), 0)}


MEMORY_PROBE = r"""
import json, sys, torch
from vaediff.data import load_dataset
name, model, dataset_name = sys.argv[1], sys.argv[2], sys.argv[3]
# VmHWM, the peak of this process's own memory: ru_maxrss would include the parent's peak from before exec
def peak_mb(): return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
def rss_mb(): return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
before = rss_mb(); dataset = load_dataset(dataset_name); data_mb = rss_mb() - before
sys.path.insert(0, sys.argv[4]); from run import _models, _step
objective, build = _models()[model]
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
net.train(); optimizer = torch.optim.AdamW(net.parameters(), foreach=True)
for step in range(2):  # the second step holds Adam's state as well: the steady-state peak
    _step(objective, net, optimizer, dataset.train.as_float(slice(0, 64)), dataset.train.labels[:64], step)
print(json.dumps({"sample": sample_peak, "train": peak_mb(), "data_mb": data_mb}))
"""


def memory(dataset_name: str) -> dict:
    """Peak resident memory of sampling 500 images and of training (batch 64), each model in its own
    process (a process's peak only grows, so sampling is measured first, then training). The probes run
    at once, one thread each: memory does not depend on speed."""
    import os

    peaks, data_mb = {}, None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    probes = {name: subprocess.Popen([sys.executable, "-c", MEMORY_PROBE, name, name, dataset_name,
                                      str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True, env=env)
              for name in _models()}
    for name, process in probes.items():
        stdout, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"memory probe {name} failed with exit code {process.returncode}")
        probe = json.loads(stdout.strip().splitlines()[-1])
        peaks[f"sample:{name}"] = round(probe["sample"])
        peaks[f"train:{name}"] = round(probe["train"])
        data_mb = probe["data_mb"]
        log(f"memory {name}: sampling {probe['sample']:.0f} MB, training {probe['train']:.0f} MB")
    quickstart = RESULTS / "quickstart-latest.json"
    if quickstart.is_file():
        peaks["quickstart"] = json.loads(quickstart.read_text())["peak_rss_mb"]
    return {"peak_rss_mb": peaks, "dataset_in_memory_mb": round(data_mb, 1)}


def latent(dataset: Dataset, minutes: float, samples: int, work: Path, fast_run=None) -> dict:
    """Latent diffusion within the same budget, against the pixel fast preset (trained here if needed)."""
    from vaediff.evaluator_network import load_or_train_evaluator

    evaluator = load_or_train_evaluator(dataset, progress=False)
    log(f"training latent diffusion for {minutes} min")
    run = _train("latent-diffusion", work / f"latent-{minutes:g}", dataset.name, minutes, {})
    options = run.sampler_settings()
    result = _quality(run, evaluator, dataset, samples, options)
    recon = run.autoencoder.reconstruct(dataset.test.as_float(slice(0, samples)))
    from vaediff.evaluate import quality_metrics

    recon_fid = quality_metrics(evaluator, recon, dataset.test.labels[:samples], dataset)["fid"]
    if fast_run is None:
        log(f"training diffusion fast for {minutes} min (the pixel-space reference)")
        fast_run = _train("diffusion", work / f"fast-{minutes:g}", dataset.name, minutes, {"preset": "fast"})
    fast = _quality(fast_run, evaluator, dataset, samples, fast_run.sampler_settings())
    # The latent preset's guidance (3, only at t/T in [0.1, 0.7]) on the pixel model too: is the gap the
    # guidance rule's, or the model's?
    latent_rule = {"guidance": options["guidance"], "guidance_interval": options["guidance_interval"]}
    fast_with_rule = _quality(fast_run, evaluator, dataset, samples, fast_run.sampler_settings(**latent_rule))
    log(f"latent: accuracy {result['class_accuracy']:.3f}, FID {result['fid']:.2f}, "
        f"{result['images_per_second']:.1f} images/s; pixel fast FID {fast['fid']:.2f}")
    return {"latent": {**result, "minutes": minutes, "autoencoder_reconstruction_fid": round(recon_fid, 3),
                       "pixel_fast_same_budget": fast, "pixel_fast_with_latent_guidance": fast_with_rule},
            "latent_class_accuracy": result["class_accuracy"],
            "latent_vs_fast_fid_ratio": round(result["fid"] / fast["fid"], 4),
            "latent_images_per_second": result["images_per_second"]}


FLOW_STEPS = (1, 2, 4, 8, 16, 32)


def flow(dataset: Dataset, minutes: float, samples: int, work: Path, fast_run=None) -> dict:
    """Flow matching against the fast diffusion preset, the same training minutes: quality and images/s at
    each number of sampling steps, both families in one figure (flow_steps.png beside the results)."""
    from vaediff.evaluator_network import load_or_train_evaluator
    from vaediff.figures import plot_curves

    evaluator = load_or_train_evaluator(dataset, progress=False)
    log(f"training flow for {minutes} min")
    flow_run = _train("flow", work / f"flow-{minutes:g}", dataset.name, minutes, {})
    if fast_run is None:
        log(f"training diffusion fast for {minutes} min (the reference)")
        fast_run = _train("diffusion", work / f"fast-flow-{minutes:g}", dataset.name, minutes, {"preset": "fast"})
    curves: dict[str, list[dict]] = {"flow (euler)": [], "diffusion (dpm)": []}
    for steps in FLOW_STEPS:
        for name, run in (("flow (euler)", flow_run), ("diffusion (dpm)", fast_run)):
            point = _quality(run, evaluator, dataset, samples, run.sampler_settings(steps=steps))
            curves[name].append({**point, "steps": steps})
            log(f"  {name} {steps} steps: accuracy {point['class_accuracy']:.3f}, FID {point['fid']:.2f}, "
                f"{point['images_per_second']:.1f} images/s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, "steps", RESULTS / "flow_steps.png", f"flow matching and diffusion, {minutes:g} min each",
                "sampling steps", log_x=True, panels=(("fid", "FID ↓"), ("class_accuracy", "class accuracy ↑")))
    flow_8 = next(p for p in curves["flow (euler)"] if p["steps"] == 8)
    fast_20 = _quality(fast_run, evaluator, dataset, samples, fast_run.sampler_settings())
    return {"flow": {"minutes": minutes, "curves": curves, "fast_default": fast_20,
                     "flow_steps_trained": _steps_trained(flow_run.run_dir),
                     "fast_steps_trained": _steps_trained(fast_run.run_dir)},
            "flow8_class_accuracy": flow_8["class_accuracy"], "fast20_class_accuracy": fast_20["class_accuracy"],
            "flow8_vs_fast20_fid_ratio": round(flow_8["fid"] / fast_20["fid"], 4),
            "flow8_vs_fast20_images_per_second": round(flow_8["images_per_second"] / fast_20["images_per_second"], 2)}


# ---------------------------------------------------------------------------------------------------------
# Output


def markdown(results: dict) -> str:
    rows = [("matmul peak (GFLOP/s)", results.get("matmul_peak_gflops")),
            ("data loader speedup vs the seed's torchvision loader", results.get("data_loader_speedup")),
            ("training: % of matmul peak", results.get("train_percent_of_peak")),
            ("training: images/s", results.get("train_images_per_second")),
            ("budget (minutes)", results.get("budget_minutes")),
            ("fast preset class accuracy", results.get("fast_class_accuracy")),
            ("seed preset class accuracy", results.get("seed_class_accuracy")),
            ("fast / seed Fréchet distance", results.get("fast_vs_seed_fid_ratio")),
            ("minutes for fast to reach 0.90 accuracy", results.get("fast_minutes_to_0.90")),
            ("default sampler speedup vs seed's DDPM-1000", results.get("sampler_speedup")),
            ("default sampler FID / DDIM-100 FID", results.get("sampler_fid_ratio")),
            ("VAE NLL (nats) by training minutes", results.get("vae_nll_nats")),
            ("latent diffusion class accuracy", results.get("latent_class_accuracy")),
            ("latent / fast Fréchet distance", results.get("latent_vs_fast_fid_ratio")),
            ("latent diffusion images/s (with guidance)", results.get("latent_images_per_second")),
            *_latent_rows(results.get("latent")),
            ("flow, 8 Euler steps: class accuracy", results.get("flow8_class_accuracy")),
            ("fast preset, its default 20 steps: class accuracy", results.get("fast20_class_accuracy")),
            ("flow 8 steps / fast 20 steps Fréchet distance", results.get("flow8_vs_fast20_fid_ratio")),
            ("flow 8 steps / fast 20 steps images/s", results.get("flow8_vs_fast20_images_per_second")),
            ("peak RSS (MB)", results.get("peak_rss_mb")),
            ("70,000 images in memory (MB)", results.get("dataset_in_memory_mb"))]
    lines = [f"# vaediff benchmark, {results['date']} on {results['host']} ({results['device']}, "
             f"{results['threads']} threads, torch {results['torch']}, commit {results['commit']})", "",
             f"CPU: {results.get('cpu', '?')}", "",
             f"`{results['command']}` on {results['dataset']}", "", "| measure | value |", "|---|---|"]
    for label, value in rows:
        if value is None:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"| {label} | {value} |")
    for key, title in (("time_to_quality", "Time to quality"), ("sampling", "Samplers")):
        if results.get(key):
            columns = list(dict.fromkeys(k for row in results[key] for k in row))
            lines += ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in results[key]]
    return "\n".join(lines) + "\n"


def _latent_rows(latent: dict | None) -> list[tuple[str, dict]]:
    if not latent:
        return []
    keys = ("class_accuracy", "fid", "images_per_second", "guidance", "guidance_interval")
    pick = lambda row: {k: row[k] for k in keys if k in row}  # noqa: E731
    return [("latent diffusion (its defaults)", {**pick(latent), "reconstruction fid":
                                                 latent["autoencoder_reconstruction_fid"]}),
            ("pixel fast, same budget (its defaults)", pick(latent["pixel_fast_same_budget"])),
            ("pixel fast with the latent preset's guidance", pick(latent["pixel_fast_with_latent_guidance"]))]


def cpu_description() -> str:
    """The CPU model and the vector flags that set its matmul peak (lscpu), printed beside every ratio."""
    try:
        fields = dict(line.split(":", 1) for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if ":" in line)
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    flags = [f for f in fields.get("Flags", "").split() if f.startswith(("avx", "amx", "fma"))]
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, {' '.join(flags)}"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3-minute trainings, fewer samples: about 10 minutes")
    parser.add_argument("--dataset", default="fashion-mnist", help="data set (default: fashion-mnist)")
    parser.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--samples", type=int, default=None, help="samples per quality measurement")
    parser.add_argument("--minutes", type=float, nargs="+", default=None,
                        help="training budgets of the quality section (default: 3 with --quick, else 2 5 10)")
    parser.add_argument("--keep-runs", type=Path, default=None, metavar="DIR",
                        help="train into DIR and keep the runs there, reusing finished ones found there "
                        "(default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    sections = args.sections.split(",") if args.sections else list(QUICK_SECTIONS if args.quick else SECTIONS)
    samples = args.samples or (200 if args.quick else 1000)
    budgets = args.minutes or ([3.0] if args.quick else [2.0, 5.0, 10.0])
    dataset = load_dataset(args.dataset)
    results: dict = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(),
                     "device": platform.processor() or platform.machine(), "cpu": cpu_description(), "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "commit": _commit(), "dataset": dataset.name, "quick": args.quick,
                     "command": "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    started = time.perf_counter()
    global REUSE_RUNS
    REUSE_RUNS = args.keep_runs is not None
    work = args.keep_runs or Path(tempfile.mkdtemp(prefix="vaediff-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    trained: dict = {}
    try:
        if "peak" in sections or "throughput" in sections:
            results.update(matmul_peak())
        if "data" in sections:
            results.update(data_speed(dataset, 30 if args.quick else 300))
        if "throughput" in sections:
            results.update(training_throughput(dataset, results["matmul_peak_gflops"], 2 if args.quick else 10))
        if "quality" in sections or "sampling" in sections:
            summary, trained = time_to_quality(dataset, budgets, samples, work)
            results.update(summary)
        if "sampling" in sections:
            # --quick compares the samplers' FID on 100 samples (DDIM-100 is the slow part of the suite)
            results.update(sampling(trained, dataset, 100 if args.quick else samples, args.quick))
        if "vae" in sections:
            results.update(vae_section(dataset, [0.5] if args.quick else [1.0, 5.0], work, 100 if args.quick else 1000,
                                       1000 if args.quick else len(dataset.test)))
        if "memory" in sections:
            results.update(memory(args.dataset))
        if "latent" in sections:
            fast = trained.get("fast") if trained and max(budgets) == 10.0 else None  # reuse a 10-minute run
            results.update(latent(dataset, 10.0, samples, work, fast))
        if "flow" in sections:
            fast = trained.get("fast") if trained and max(budgets) == 10.0 else None  # reuse a 10-minute run
            results.update(flow(dataset, max(budgets), samples, work, fast))
    finally:
        if args.keep_runs is None:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    stem = write_results(results, "quick" if args.quick else "", markdown(results),
                         shown={k: v for k, v in results.items() if not isinstance(v, list)})
    log(f"wrote {stem}.json and {stem}.md in {results['wall_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
