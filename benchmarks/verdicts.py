"""Issue 19's targets on Fashion-MNIST: how far the fast diffusion preset's CAS is from real data's, and
which guidance scale each of class accuracy and CAS prefers.

    uv run python -m benchmarks.verdicts                        # train 10 minutes, N = 10,000 (about an hour)
    uv run python -m benchmarks.verdicts --keep-run DIR         # the same, the trained run kept in DIR
    uv run python -m benchmarks.verdicts --run DIR --samples 2000   # an existing run, fewer samples

CAS (Ravuri & Vinyals 2019) trains the evaluator's recipe on N generated labelled samples and measures it on
the real test split; `cas_real` is the same recipe on N real training images. The guidance sweep draws
`--sweep-samples` per point (a scale, guided at every step or only on an interval of noise levels): class
accuracy rewards recognisable samples, CAS also diverse ones, so the two usually peak at different scales.
CAS at N is measured with the run's default sampler and, when the sweep prefers another point, with that
one too (a fresh draw). Writes benchmarks/results/<date>-<host>-verdicts.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.guidance_interval import parse_plan
from benchmarks.harness import commit, cpu_description, log, steps_trained, write_results

# guidance everywhere at the report's scales, then guidance only on t/T in [0.1, 0.7] (Kynkäänniemi et al.
# 2024: guidance at high noise drives a class's samples to the same few layouts, which CAS should punish)
PLAN = "1:0:1,1.5:0:1,2:0:1,3:0:1,4:0:1,6:0:1,2:0.1:0.7,3:0.1:0.7,4:0.1:0.7"


def _point(run, evaluator, dataset, count: int, options: dict) -> dict:
    from vaediff.report import quality_point

    point = quality_point(run, evaluator, dataset, count, 0, options, cas=True)
    return {"guidance": options["guidance"], "guidance_interval": list(options["guidance_interval"]),
            "num_samples": count,
            "class_accuracy": round(point["class_accuracy"], 4), "cas": round(point["cas"], 4),
            "fid": round(point["fid"], 3), "ci95": {k: [round(v, 4) for v in point["ci95"][k]]
                                                    for k in ("class_accuracy", "cas", "fid")},
            "images_per_second": round(point["samples_per_second"], 2)}


def _guided_everywhere(point: dict) -> bool:
    return tuple(point["guidance_interval"]) == (0, 1)


def _label(point: dict) -> str:
    low, high = point["guidance_interval"]
    return f"{point['guidance']:g}" + ("" if _guided_everywhere(point) else f" on [{low:g}, {high:g}]")


def measure(run, dataset, samples: int, sweep_samples: int, plan: list[tuple[float, tuple[float, float]]]) -> dict:
    """The sweep at `sweep_samples` a point, then CAS at N = `samples` with the run's default sampler and,
    when it differs, with the sweep's best point for CAS (a fresh draw, so its number is not selected)."""
    from vaediff.cas import real_data_score
    from vaediff.evaluator_network import load_or_train_evaluator

    evaluator = load_or_train_evaluator(dataset, progress=False)
    defaults = run.sampler_settings()
    settings = [run.sampler_settings(guidance=guidance, guidance_interval=interval) for guidance, interval in plan]
    sweep = []
    for options in settings:
        sweep.append(_point(run, evaluator, dataset, sweep_samples, options))
        log(f"  guidance {_label(sweep[-1])}: class accuracy {sweep[-1]['class_accuracy']:.3f}, CAS {sweep[-1]['cas']:.3f}")
    sweep_real = real_data_score(dataset, sweep_samples)
    best_index = max(range(len(sweep)), key=lambda i: sweep[i]["cas"])
    best = sweep[best_index]
    everywhere = [p for p in sweep if _guided_everywhere(p)] or sweep
    real = real_data_score(dataset, samples)
    log(f"default sampler {defaults}: {samples} samples, CAS (real images: {real['cas']:.4f})")
    main = _point(run, evaluator, dataset, samples, defaults)
    log(f"  CAS {main['cas']:.4f}")
    result = {"samples": samples, "default": main, "cas_real": round(real["cas"], 4),
              "cas_real_ci95": [round(v, 4) for v in real["ci95"]],
              "cas_gap": round(real["cas"] - main["cas"], 4), "cas_gap_target": 0.03,
              "sweep": sweep, "sweep_cas_real": round(sweep_real["cas"], 4),
              "guidance_max_cas": max(everywhere, key=lambda p: p["cas"])["guidance"],
              "guidance_max_class_accuracy": max(everywhere, key=lambda p: p["class_accuracy"])["guidance"],
              "best_cas_point": _label(best), "evaluator_accuracy": evaluator.accuracy}
    if settings[best_index] != defaults:
        log(f"the sweep's best point for CAS, guidance {_label(best)}: {samples} samples")
        chosen = _point(run, evaluator, dataset, samples, settings[best_index])
        log(f"  CAS {chosen['cas']:.4f}")
        result.update(best_cas=chosen, best_cas_gap=round(real["cas"] - chosen["cas"], 4))
    return result


def markdown(results: dict) -> str:
    main = results["default"]
    lines = [f"# vaediff verdicts benchmark, {results['date']} ({results['host']}, commit {results['commit']})", "",
             f"CPU: {results['cpu']}", "", f"`{results.get('command', 'python -m benchmarks.verdicts')}`", "",
             f"Fast diffusion preset, {results['steps_trained']} optimizer steps ({results['minutes']} min), "
             f"{results['dataset']}.", "",
             f"- CAS at N = {results['samples']:,} ({main['guidance']:g} guidance): **{main['cas']:.4f}** "
             f"{main['ci95']['cas']}; real images: **{results['cas_real']:.4f}** {results['cas_real_ci95']}; "
             f"cas_real - cas = **{results['cas_gap']:.4f}** (target <= 0.03)",
             f"- class accuracy {main['class_accuracy']:.4f}, FID {main['fid']:.3g}"]
    if "best_cas" in results:
        chosen = results["best_cas"]
        lines += [f"- at the sweep's best point for CAS (guidance {results['best_cas_point']}), a fresh draw of "
                  f"{results['samples']:,}: CAS **{chosen['cas']:.4f}** {chosen['ci95']['cas']}, gap "
                  f"**{results['best_cas_gap']:.4f}**; class accuracy {chosen['class_accuracy']:.4f}, FID {chosen['fid']:.3g}"]
    lines += ["",
             f"Guidance sweep ({results['sweep'][0]['num_samples']:,} samples a scale; CAS on as many real images: "
             f"{results['sweep_cas_real']:.4f}):", "",
             "| guidance | class accuracy | CAS | FID |", "|---|---|---|---|"]
    for p in results["sweep"]:
        lines.append(f"| {_label(p)} | {p['class_accuracy']:.3f} {p['ci95']['class_accuracy']} | "
                     f"{p['cas']:.3f} {p['ci95']['cas']} | {p['fid']:.3g} |")
    lines += ["", f"Guided at every step, the scale that maximises CAS: **{results['guidance_max_cas']:g}**; class "
                  f"accuracy: **{results['guidance_max_class_accuracy']:g}**. Best point for CAS overall: "
                  f"{results['best_cas_point']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the fast preset")
    parser.add_argument("--run", default=None, help="measure this run instead of training one")
    parser.add_argument("--keep-run", type=Path, default=None, metavar="DIR",
                        help="train into DIR and keep the run (default: a temporary folder)")
    parser.add_argument("--samples", type=int, default=10000, help="N for cas and cas_real")
    parser.add_argument("--sweep-samples", type=int, default=1000, help="samples per guidance scale")
    parser.add_argument("--plan", default=PLAN, help="sweep points guidance:lo:hi (guided where lo <= t/T <= hi)")
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
            run = train_run("diffusion", args.keep_run or Path(work) / "fast", args.dataset, options={"preset": "fast"},
                            train_options={"minutes": args.minutes}, progress=False, figures=False)
        steps = steps_trained(run.run_dir)
        results = measure(run, dataset, args.samples, args.sweep_samples, parse_plan(args.plan))
    results.update(date=datetime.date.today().isoformat(), host=socket.gethostname(), commit=commit(),
                   cpu=cpu_description(), dataset=args.dataset, minutes=args.minutes if not args.run else None,
                   steps_trained=steps, command="python -m benchmarks.verdicts " + " ".join(
                       argv if argv is not None else sys.argv[1:]), wall_minutes=round((time.perf_counter() - started) / 60, 1))
    write_results(results, "verdicts", markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
