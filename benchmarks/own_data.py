"""Issue 20's targets: the user's own images on this CPU.

    uv run python -m benchmarks.own_data                 # about 15 minutes on a 2-core CPU
    uv run python -m benchmarks.own_data --minutes 2     # a quicker look

1. Loading 10,000 32x32 RGB PNGs from a labelled folder (vaediff's folder reader) against Pillow's own
   decode speed on the same files, one thread (the limit a reader can approach per core).
2. The fast diffusion preset trained `--minutes` on a 32x32 RGB labelled set written here (ten classes of
   coloured shapes that tests/helpers/own_data.py draws, the tests' own data), then class accuracy of 1,000 samples
   by an evaluator trained on the same set.
3. Training steps/s of 32x32x3 against 28x28x1 (mnist-5k) for the fast preset, measured in the same run.

Writes benchmarks/results/<date>-<host>-own-data.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import commit, cpu_description, log, write_results
from tests.helpers.own_data import write_shape_folder  # the same shapes the tests draw


def loading(root: Path, per_class: int) -> dict:
    from PIL import Image

    from vaediff.data import load_dataset

    folder = write_shape_folder(root / "shapes-10k", classes=10, per_class=per_class)
    files = sorted(folder.rglob("*.png"))
    started = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            image.convert("RGB").load()
    pillow = len(files) / (time.perf_counter() - started)
    started = time.perf_counter()
    data = load_dataset(str(folder))
    reader = len(files) / (time.perf_counter() - started)
    return {"png_files": len(files), "pillow_decode_images_per_s_one_thread": round(pillow),
            "folder_reader_images_per_s": round(reader), "reader_vs_pillow": round(reader / pillow, 2),
            "in_memory_mb": round((data.train.images.numel() + data.test.images.numel()) / 2**20, 1)}


def steps_per_second(dataset_name: str, work: Path, seconds: float) -> float:
    """Optimizer steps/s of the fast preset (its recipe: batch 32) over `seconds` of training."""
    from vaediff.families import train_run

    run = train_run("diffusion", work / f"speed-{Path(dataset_name).name}", dataset_name,
                    train_options={"minutes": seconds / 60}, progress=False, figures=False)
    rows = (run.run_dir / "loss.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    return int(last["step"]) / float(last["elapsed_s"])


def quality(folder: Path, minutes: float, work: Path, samples: int) -> dict:
    from vaediff.data import load_dataset
    from vaediff.evaluator_network import load_or_train_evaluator
    from vaediff.families import train_run
    from vaediff.report import quality_point

    dataset = load_dataset(str(folder))
    evaluator = load_or_train_evaluator(dataset, progress=False)
    log(f"evaluator: test accuracy {evaluator.accuracy:.3f}; training the fast preset {minutes} min")
    run = train_run("diffusion", work / "fast-rgb32", str(folder), train_options={"minutes": minutes},
                    progress=False, figures=False)
    point = quality_point(run, evaluator, dataset, samples, 0, run.sampler_settings())
    return {"minutes": minutes, "class_accuracy": round(point["class_accuracy"], 4),
            "class_accuracy_ci95": [round(v, 4) for v in point["ci95"]["class_accuracy"]],
            "fid": round(point["fid"], 3), "evaluator_accuracy": round(evaluator.accuracy, 4),
            "target_class_accuracy": 0.9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the quality section")
    parser.add_argument("--per-class", type=int, default=1000, help="PNGs per class (10 classes)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--speed-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(), "commit": commit(),
               "cpu": cpu_description(), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        log(f"writing and loading {10 * args.per_class} PNGs")
        results["loading"] = loading(work, args.per_class)
        log(f"steps/s: 32x32x3 against 28x28x1, {args.speed_seconds:g} s each")
        rgb = steps_per_second(str(work / "shapes-10k"), work, args.speed_seconds)
        gray = steps_per_second("mnist-5k", work, args.speed_seconds)
        results["speed"] = {"rgb32_steps_per_s": round(rgb, 2), "gray28_steps_per_s": round(gray, 2),
                            "rgb32_vs_gray28": round(rgb / gray, 3)}
        results["quality"] = quality(work / "shapes-10k", args.minutes, work, args.samples)
    results["wall_minutes"] = round((time.perf_counter() - started) / 60, 1)
    load, speed, qual = results["loading"], results["speed"], results["quality"]
    table = "\n".join([
        f"# vaediff own-data benchmark, {results['date']} ({results['host']}, commit {results['commit']})", "",
        f"CPU: {results['cpu']}", "", "| measure | value |", "|---|---|",
        f"| PNGs loaded (32x32 RGB) | {load['png_files']:,} |",
        f"| folder reader, images/s | {load['folder_reader_images_per_s']:,} |",
        f"| Pillow decode alone, one thread, images/s | {load['pillow_decode_images_per_s_one_thread']:,} |",
        f"| reader / Pillow | {load['reader_vs_pillow']} |",
        f"| in memory (uint8), MB | {load['in_memory_mb']} |",
        f"| fast preset steps/s, 32x32x3 | {speed['rgb32_steps_per_s']} |",
        f"| fast preset steps/s, 28x28x1 | {speed['gray28_steps_per_s']} |",
        f"| ratio | {speed['rgb32_vs_gray28']} |",
        f"| class accuracy after {qual['minutes']:g} min (target >= 0.9) | {qual['class_accuracy']} "
        f"{qual['class_accuracy_ci95']} |",
        f"| FID | {qual['fid']} |", f"| evaluator's test accuracy | {qual['evaluator_accuracy']} |"])
    write_results(results, "own-data", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
