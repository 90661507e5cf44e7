"""Issue 19's targets on Fashion-MNIST: how far the fast diffusion preset's CAS is from real data's, and
which guidance scale each of class accuracy and CAS prefers.

    uv run python benchmarks/verdicts.py                        # train 10 minutes, N = 10,000 (about 45 min)
    uv run python benchmarks/verdicts.py --run DIR --samples 2000   # an existing run, fewer samples

CAS (Ravuri & Vinyals 2019) trains the evaluator's recipe on N generated labelled samples and measures it on
the real test split; `cas_real` is the same recipe on N real training images. The guidance sweep draws
`--sweep-samples` per scale: class accuracy rewards recognisable samples, CAS also diverse ones, so the two
usually peak at different scales. Writes benchmarks/results/<date>-<host>-verdicts.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import RESULTS, _commit, cpu_description, log  # noqa: E402  the suite's helpers, one copy

SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _point(run, evaluator, dataset, count: int, options: dict) -> dict:
    from vaediff.report import quality_point

    point = quality_point(run, evaluator, dataset, count, 0, options, cas=True)
    return {"guidance": options["guidance"], "num_samples": count,
            "class_accuracy": round(point["class_accuracy"], 4), "cas": round(point["cas"], 4),
            "fid": round(point["fid"], 3), "ci95": {k: [round(v, 4) for v in point["ci95"][k]]
                                                    for k in ("class_accuracy", "cas", "fid")},
            "images_per_second": round(point["samples_per_second"], 2)}


def measure(run, dataset, samples: int, sweep_samples: int, scales: tuple[float, ...]) -> dict:
    from vaediff.cas import real_data_score
    from vaediff.evaluator_network import load_or_train_evaluator

    evaluator = load_or_train_evaluator(dataset, progress=False)
    defaults = run.sampler_settings()
    log(f"default sampler {defaults}: {samples} samples, CAS")
    main = _point(run, evaluator, dataset, samples, defaults)
    real = real_data_score(dataset, samples)
    log(f"  CAS {main['cas']:.4f} against real {real['cas']:.4f}")
    sweep = []
    for scale in scales:
        point = _point(run, evaluator, dataset, sweep_samples, {**defaults, "guidance": scale})
        sweep.append(point)
        log(f"  guidance {scale:g}: class accuracy {point['class_accuracy']:.3f}, CAS {point['cas']:.3f}")
    sweep_real = real_data_score(dataset, sweep_samples)
    return {"samples": samples, "default": main, "cas_real": round(real["cas"], 4),
            "cas_real_ci95": [round(v, 4) for v in real["ci95"]],
            "cas_gap": round(real["cas"] - main["cas"], 4), "cas_gap_target": 0.03,
            "sweep": sweep, "sweep_cas_real": round(sweep_real["cas"], 4),
            "guidance_max_cas": max(sweep, key=lambda p: p["cas"])["guidance"],
            "guidance_max_class_accuracy": max(sweep, key=lambda p: p["class_accuracy"])["guidance"],
            "evaluator_accuracy": evaluator.accuracy}


def markdown(results: dict) -> str:
    main = results["default"]
    lines = [f"# vaediff verdicts benchmark, {results['date']} ({results['host']}, commit {results['commit']})", "",
             f"CPU: {results['cpu']}", "",
             f"Fast diffusion preset, {results['steps_trained']} optimizer steps ({results['minutes']} min), "
             f"{results['dataset']}.", "",
             f"- CAS at N = {results['samples']:,} ({main['guidance']:g} guidance): **{main['cas']:.4f}** "
             f"{main['ci95']['cas']}; real images: **{results['cas_real']:.4f}** {results['cas_real_ci95']}; "
             f"cas_real - cas = **{results['cas_gap']:.4f}** (target <= 0.03)",
             f"- class accuracy {main['class_accuracy']:.4f}, FID {main['fid']:.3g}", "",
             f"Guidance sweep ({results['sweep'][0]['num_samples']:,} samples a scale; CAS on as many real images: "
             f"{results['sweep_cas_real']:.4f}):", "",
             "| guidance | class accuracy | CAS | FID |", "|---|---|---|---|"]
    for p in results["sweep"]:
        lines.append(f"| {p['guidance']:g} | {p['class_accuracy']:.3f} {p['ci95']['class_accuracy']} | "
                     f"{p['cas']:.3f} {p['ci95']['cas']} | {p['fid']:.3g} |")
    lines += ["", f"Guidance that maximises CAS: **{results['guidance_max_cas']:g}**; class accuracy: "
                  f"**{results['guidance_max_class_accuracy']:g}**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the fast preset")
    parser.add_argument("--run", default=None, help="measure this run instead of training one")
    parser.add_argument("--samples", type=int, default=10000, help="N for cas and cas_real")
    parser.add_argument("--sweep-samples", type=int, default=1000, help="samples per guidance scale")
    parser.add_argument("--scales", default=",".join(f"{s:g}" for s in SCALES))
    args = parser.parse_args(argv)
    from vaediff.data import load_dataset
    from vaediff.families import load_run, train_run

    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    with tempfile.TemporaryDirectory() as work:
        if args.run:
            run = load_run(args.run)
        else:
            log(f"training the fast preset for {args.minutes} min on {args.dataset}")
            run = train_run("diffusion", Path(work) / "fast", args.dataset, options={"preset": "fast"},
                            train_options={"minutes": args.minutes}, progress=False, figures=False)
        rows = (run.run_dir / "loss.csv").read_text().strip().splitlines()
        steps = int(rows[-1].split(",")[list(rows[0].split(",")).index("step")])
        results = measure(run, dataset, args.samples, args.sweep_samples,
                          tuple(float(s) for s in args.scales.split(",")))
    results.update(date=datetime.date.today().isoformat(), host=socket.gethostname(), commit=_commit(),
                   cpu=cpu_description(), dataset=args.dataset, minutes=args.minutes if not args.run else None,
                   steps_trained=steps, wall_minutes=round((time.perf_counter() - started) / 60, 1))
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{results['date']}-{results['host']}-verdicts"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    stem.with_suffix(".md").write_text(markdown(results))
    print(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
