"""The suite's flow section: flow matching against the fast diffusion preset, the same training minutes,
at each number of sampling steps."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import RESULTS, log, steps_trained
from benchmarks.quality import quality, train
from vaediff.data import Dataset

FLOW_STEPS = (1, 2, 4, 8, 16, 32)


def flow(dataset: Dataset, minutes: float, samples: int, work: Path, fast_run=None) -> dict:
    """Flow matching against the fast diffusion preset, the same training minutes: quality and images/s at
    each number of sampling steps, both families in one figure (flow_steps.png beside the results)."""
    from vaediff.evaluator_network import load_or_train_evaluator
    from vaediff.figures import plot_curves

    evaluator = load_or_train_evaluator(dataset, progress=False)
    log(f"training flow for {minutes} min")
    flow_run = train("flow", work / f"flow-{minutes:g}", dataset.name, minutes, {})
    if fast_run is None:
        log(f"training diffusion fast for {minutes} min (the reference)")
        fast_run = train("diffusion", work / f"fast-flow-{minutes:g}", dataset.name, minutes, {"preset": "fast"})
    curves: dict[str, list[dict]] = {"flow (euler)": [], "diffusion (dpm)": []}
    for steps in FLOW_STEPS:
        for name, run in (("flow (euler)", flow_run), ("diffusion (dpm)", fast_run)):
            point = quality(run, evaluator, dataset, samples, run.sampler_settings(steps=steps))
            curves[name].append({**point, "steps": steps})
            log(f"  {name} {steps} steps: accuracy {point['class_accuracy']:.3f}, FID {point['fid']:.2f}, "
                f"{point['images_per_second']:.1f} images/s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, "steps", RESULTS / "flow_steps.png", f"flow matching and diffusion, {minutes:g} min each",
                "sampling steps", log_x=True, panels=(("fid", "FID ↓"), ("class_accuracy", "class accuracy ↑")))
    flow_8 = next(p for p in curves["flow (euler)"] if p["steps"] == 8)
    fast_20 = quality(fast_run, evaluator, dataset, samples, fast_run.sampler_settings())
    return {"flow": {"minutes": minutes, "curves": curves, "fast_default": fast_20,
                     "flow_steps_trained": steps_trained(flow_run.run_dir),
                     "fast_steps_trained": steps_trained(fast_run.run_dir)},
            "flow8_class_accuracy": flow_8["class_accuracy"], "fast20_class_accuracy": fast_20["class_accuracy"],
            "flow8_vs_fast20_fid_ratio": round(flow_8["fid"] / fast_20["fid"], 4),
            "flow8_vs_fast20_images_per_second": round(flow_8["images_per_second"] / fast_20["images_per_second"], 2)}
