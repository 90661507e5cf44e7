"""Command line: each subcommand parses its flags and calls one library function, nothing more.

Errors the user can fix (VaediffError) become one line on stderr and exit code 2 (3 for a diverged
training, 128+signal for an interrupted one); argparse errors are shortened to one line too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vaediff import __version__
from vaediff.checks import (
    MAX_EVAL_SAMPLES,
    MAX_GRID_IMAGES,
    MAX_IW_SAMPLES,
    MAX_SAMPLING_STEPS,
    MIN_EVAL_SAMPLES,
    data_source_inputs,
    os_error_line,
    user_output_file,
)
from vaediff.cli_args import (
    CommandListFormatter,
    OneLineParser,
    add_dataset_flags,
    add_device_flag,
    add_family_flags,
    add_feature_flags,
    add_output_flags,
    add_report_to_flag,
    add_sampler_flags,
    add_sampling_precision_flag,
    at_most,
    class_label,
    json_object,
    nonnegative_int,
    positive_float,
    positive_int,
)
from vaediff.console import clear_progress_bars
from vaediff.errors import AlreadyFinished, VaediffError

PROG = "vaediff"


# ---------------------------------------------------------------------------------------------------------
# Handlers: parse -> library call -> print a short summary.


def _data_options(args: argparse.Namespace) -> dict:
    """load_dataset's options beside the source (--image-size, --image-column, --label-column)."""
    return {"image_size": args.image_size, "image_column": args.image_column, "label_column": args.label_column}


def cmd_eda(args: argparse.Namespace) -> None:
    from vaediff.data import load_dataset  # torch: imported when the command runs (instant --help)
    from vaediff.eda import run_eda
    from vaediff.runs import prepare_output_dir, write_run_config

    dataset = load_dataset(args.dataset, args.data_dir, **_data_options(args))
    out = prepare_output_dir(args.out, overwrite=args.overwrite, kind="eda", inputs=data_source_inputs(args.dataset))
    write_run_config(out, "eda", {"dataset": args.dataset, "data_dir": args.data_dir, **_data_options(args),
                                  "data_shape": dataset.shape.to_dict(), "seed": args.seed})
    summary = run_eda(dataset, out, seed=args.seed)
    train, test = summary["splits"]["train"], summary["splits"]["test"]
    print(f"{dataset.name}: {train['num_images']:,} train + {test['num_images']:,} test images "
          f"from {dataset.source}; pixel mean {summary['pixel_mean']:.3f}, std {summary['pixel_std']:.3f}")
    print(f"wrote dist.png, samples.png, class_means.png, pixels.png, summary.json to {out}")


def cmd_train(args: argparse.Namespace) -> None:
    from vaediff.families import (  # the registry (torch): `train --help` reads it too
        family_of,
        train_run,
    )
    from vaediff.training import is_main_process

    options = {option.name: getattr(args, option.name) for option in family_of(args.model_type).options}
    if args.model_config is not None:
        options["model"] = args.model_config
    train_options = {
        "epochs": args.epochs, "minutes": args.minutes, "max_steps": args.max_steps,
        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "mixed_precision": args.mixed_precision, "precision": args.precision, "grad_accum": args.grad_accum,
        "checkpoint_every": args.checkpoint_every, "compile": args.compile,
    }
    run = train_run(args.model_type, args.out, args.dataset, args.data_dir, options, train_options,
                    resume=args.resume, overwrite=args.overwrite, report_to=args.report_to, **_data_options(args))
    if is_main_process():
        print(f"trained {args.model_type}: {run.run_dir} (loss.csv, loss.png, samples.png, weights, config.json)")


def _sampler_options(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("sampler", "steps", "guidance", "guidance_interval")
            if getattr(args, k, None) is not None}


def cmd_sample(args: argparse.Namespace) -> None:
    from vaediff.families import (  # torch: imported when the command runs
        check_command,
        class_names_of,
        load_run,
    )
    from vaediff.generation import choose_sampling_precision, write_sample_grid

    user_output_file(args.out)  # before loading anything: a bad path fails at once
    run = load_run(args.run)
    check_command(run.model_type, "sample")
    user_output_file(args.out, [("run", run.run_dir), *data_source_inputs(run.config["settings"]["dataset"])])
    options = run.sampler_settings(**_sampler_options(args))
    choice = choose_sampling_precision(run, args.precision)
    if args.precision == "auto":
        print(f"sampling in {choice.chosen}: {choice.why}")
    names = class_names_of(run.config)
    write_sample_grid(run, args.out, seed=args.seed, count=args.n, label=args.label, class_names=names, **options)
    print(f"wrote {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from vaediff.evaluate import evaluate_run, format_metrics  # torch: imported when the command runs

    metrics = evaluate_run(args.run, n_samples=args.n_samples, iw_samples=args.iw_samples,
                           binarize=args.binarize, seed=args.seed, cache_dir=args.cache_dir,
                           sampler_options=_sampler_options(args),
                           likelihood={"test_images": args.likelihood_images, "bound_timesteps": args.bound_timesteps,
                                       "ode_steps": args.ode_steps}, out_dir=args.out, minutes=args.minutes,
                           features=args.features, inception_weights=args.inception_weights,
                           precision=args.precision)
    print(format_metrics(metrics))
    print(f"wrote {Path(args.out or args.run) / 'metrics.json'}")


def cmd_evaluator(args: argparse.Namespace) -> None:
    from vaediff.data import load_dataset  # torch: imported when the command runs (instant --help)
    from vaediff.evaluator_network import load_or_train_evaluator

    dataset = load_dataset(args.dataset, args.data_dir, **_data_options(args))
    evaluator = load_or_train_evaluator(dataset, args.cache_dir, retrain=args.retrain)
    print(f"evaluator for {dataset.name}: test accuracy {evaluator.accuracy:.4f} ({evaluator.path})")


def cmd_real_fid(args: argparse.Namespace) -> None:
    import json

    from vaediff.data import load_dataset  # torch: imported when the command runs (instant --help)
    from vaediff.evaluate import real_fid

    dataset = load_dataset(args.dataset, args.data_dir, **_data_options(args))
    result = real_fid(dataset, args.features, args.inception_weights, args.train_images, args.test_images,
                      args.seed, args.cache_dir)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    low, high = result["ci95"]["fid"]
    print(f"{result['dataset']}: FID {result['fid']:.4g} [95% {low:.4g}, {high:.4g}], KID {result['kid']['mean']:.4g} "
          f"between {result['train_images']} training and {result['test_images']} test images, in "
          f"{result['feature_space']}")


def cmd_compare(args: argparse.Namespace) -> None:
    from vaediff.families import check_command  # torch: imported when the command runs
    from vaediff.report import check_feature_space, compare, headlines, summarize_runs
    from vaediff.runs import prepare_output_dir, write_run_config

    summaries = summarize_runs([Path(r) for r in args.runs], group_seeds=False)  # a bad run fails before --out
    for summary in summaries:
        check_command(summary.model_type, "compare")
    check_feature_space(summaries, args.features)
    inputs = [("run", Path(r)) for r in args.runs]
    inputs += [i for s in summaries for i in data_source_inputs(s.config["settings"]["dataset"])]
    out = prepare_output_dir(args.out, overwrite=args.overwrite, kind="compare", inputs=inputs)
    write_run_config(out, "compare", {"runs": args.runs, "lang": args.lang, "seed": args.seed, "features": args.features,
                                      "curve_samples": args.curve_samples, "curves": not args.no_curves})
    report = compare(args.runs, out, lang=args.lang, seed=args.seed, curve_samples=args.curve_samples,
                     curves=not args.no_curves, with_ddpm_1000=not args.no_ddpm_1000, minutes=args.minutes,
                     features=args.features)
    for line in headlines(summarize_runs([Path(r) for r in args.runs]), args.lang, args.features):
        print(line.replace("**", ""))
    print(f"wrote {report} and {report.with_suffix('.html')}")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from vaediff.quickstart import quickstart  # torch: imported when the command runs (instant --help)
    from vaediff.report import headlines, summarize_runs
    from vaediff.runs import read_json

    report = quickstart(args.out, args.dataset, args.minutes, args.data_dir, overwrite=args.overwrite,
                        resume=args.resume, seed=args.seed, lang=args.lang, seeds=args.seeds,
                        work=args.work, report_to=args.report_to, features=args.features,
                        inception_weights=args.inception_weights, precision=args.precision,
                        with_models=tuple(args.with_models or ()), **_data_options(args))
    settings = read_json(report.parent / "config.json")["settings"]  # a resumed study keeps its own
    runs = [report.parent.parent / name for name in settings["runs"]]
    lang = settings.get("lang", "en")
    print(f"\nreport: {report} (and {report.with_suffix('.html')})")
    for line in headlines(summarize_runs(runs), lang, settings.get("features", "evaluator")):
        print(line.replace("**", ""))


def cmd_push(args: argparse.Namespace) -> None:
    from vaediff.share import push_run  # torch and huggingface_hub: imported when the command runs

    print(f"uploaded {args.run} to {push_run(args.run, args.repo_id, private=args.private)}")


def cmd_serve(args: argparse.Namespace) -> None:
    from vaediff.serve import Limits, serve  # torch and gradio: imported when the command runs

    serve(args.runs, args.host, args.port, Limits(max_images=args.max_images, max_steps=args.max_steps,
                                                 concurrency=args.concurrency))


# ---------------------------------------------------------------------------------------------------------
# Parser


# the commands whose flags or choices come from the family registry (torch is imported to read it)
FAMILY_COMMANDS = ("train", "sample", "evaluate", "serve")


def build_parser(families: dict | None = None) -> argparse.ArgumentParser:
    """The parser; `families` (model type -> Family, families.FAMILIES) adds what the registry says: the
    model types, each family's flags, the sampler choices. Without it (`vaediff --help`, commands that
    need none of it) nothing heavy is imported."""
    parser = OneLineParser(prog=PROG, description="Train, sample, evaluate and compare VAEs and "
                           "class-conditional diffusion models of small images.",
                           formatter_class=CommandListFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True,
                                     parser_class=OneLineParser)

    eda = commands.add_parser("eda", help="plot and summarise a data set (class balance, samples, pixels)",
                              description="Exploratory plots and summary.json of a data set.")
    add_dataset_flags(eda)
    add_output_flags(eda, "output directory (refused if not empty, unless --overwrite)")
    eda.add_argument("--seed", type=int, default=0, help="seed for the random sample grid (default: 0)")
    eda.set_defaults(handler=cmd_eda)

    types = list(families or ())
    train = commands.add_parser("train", help="train a model (`vaediff train --help` lists the model types)",
                                description="Train a model into a run directory (weights, config.json, "
                                "loss.csv, loss.png, samples.png). Stop it any time with Ctrl-C and continue "
                                "with --resume.")
    train.add_argument("model_type", choices=types or None, metavar="MODEL",
                       help=f"model type: {', '.join(types)}" if types else "model type")
    add_dataset_flags(train, default=None)
    add_output_flags(train, "run directory (refused if not empty, unless --overwrite or --resume)")
    limits = train.add_argument_group("how long (the first limit reached stops training)")
    limits.add_argument("--epochs", type=positive_int, help="passes over the training split (default: 10 "
                        "for VAEs when no limit is given)")
    limits.add_argument("--minutes", type=positive_float, help="wall-clock training budget in minutes")
    limits.add_argument("--max-steps", type=positive_int, help="optimizer steps")
    train.add_argument("--batch-size", type=positive_int, help="images per optimizer step (default: the "
                       "model's recipe, 64 for the seed's)")
    train.add_argument("--lr", type=positive_float, help="peak learning rate (default: the model's recipe)")
    train.add_argument("--seed", type=int, help="random seed; the same seed gives the same run (default: 0)")
    train.add_argument("--resume", action="store_true", help="continue a stopped run from its checkpoint")
    examples = "; ".join(f"{m}: {f.model_config_help}" for m, f in (families or {}).items() if f.model_config_help)
    train.add_argument("--model-config", type=json_object, metavar="JSON",
                       help="override fields of the model's config" + (f" ({examples})" if examples else ""))
    train.add_argument("--checkpoint-every", type=nonnegative_int, metavar="STEPS",
                       help="checkpoint every STEPS optimizer steps (default 0: every minute)")
    train.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                       help="autocast precision of the training step (default: fp32, the same numbers on any "
                       "host); auto: bf16 where a few timed steps of this model on this chip find it clearly "
                       "faster (cached per host and model), else fp32; fp16 needs a GPU")
    train.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"),
                       help="the older name of --precision (no = fp32)")
    train.add_argument("--compile", action="store_true", default=None,
                       help="torch.compile the training step's network (minutes of compiling first on a CPU; "
                       "benchmarks/compile.py measures whether it pays on this host)")
    train.add_argument("--grad-accum", type=positive_int, metavar="N",
                       help="split each batch into N sequential micro-batches (same result, less memory)")
    add_report_to_flag(train)
    add_family_flags(train, families or {})
    add_device_flag(train)
    train.set_defaults(handler=cmd_train)

    sample = commands.add_parser("sample", help="draw images from a trained run into a PNG grid",
                                 description="Draw images from a run. Class-conditional runs without --label "
                                 "give a 10x10 grid, one row per class.")
    sample.add_argument("run", metavar="RUN", help="run directory")
    sample.add_argument("--out", required=True, metavar="FILE.png", help="PNG file to write")
    sample.add_argument("--n", type=at_most(MAX_GRID_IMAGES), default=None,
                        help=f"number of images, at most {MAX_GRID_IMAGES:,} (default: 64, or 100 for a class grid)")
    sample.add_argument("--label", type=class_label, help="draw only this class (0..K-1 for a run on K classes)")
    sample.add_argument("--seed", type=int, default=0, help="the same seed gives the same images")
    add_sampler_flags(sample, families)
    add_device_flag(sample)
    add_sampling_precision_flag(sample)
    sample.set_defaults(handler=cmd_sample)

    evaluate = commands.add_parser("evaluate", help="measure a run: likelihood, sample quality, speed",
                                   description="Write RUN/metrics.json and print a table.")
    evaluate.add_argument("run", metavar="RUN", help="run directory")
    evaluate.add_argument("--n-samples", type=at_most(MAX_EVAL_SAMPLES, MIN_EVAL_SAMPLES), default=10000,
                          help="images to draw for the sample-quality metrics (default: 10000)")
    evaluate.add_argument("--iw-samples", type=at_most(MAX_IW_SAMPLES, 2),
                          help="VAE: importance samples per test image for the NLL bound, at least 2 for its "
                          "interval (default: 1000)")
    evaluate.add_argument("--binarize", action="store_true", default=None,
                          help="VAE: likelihood on binarized test pixels (default: as the run was trained)")
    evaluate.add_argument("--likelihood-images", type=positive_int, metavar="N",
                          help="diffusion, flow: bits/dim on the first N test images (default: 1000; VAEs use all)")
    evaluate.add_argument("--bound-timesteps", type=positive_int, metavar="N",
                          help="diffusion: network calls per image for the variational bound's sum over timesteps "
                          "(default: 32)")
    evaluate.add_argument("--ode-steps", type=positive_int, metavar="N",
                          help="flow: RK4 steps of the probability-flow ODE (default: 8)")
    evaluate.add_argument("--minutes", type=positive_float, help="draw as many samples as fit in this time on "
                          "this host (at most --n-samples), measured first; refused in one line if too short")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of every random draw of the evaluation")
    evaluate.add_argument("--out", metavar="DIR", help="write metrics.json (and confusion.png) into DIR instead of "
                          "RUN (for a run that is read-only)")
    evaluate.add_argument("--cache-dir", metavar="DIR", help="where evaluator networks are kept "
                          "(default: ~/.cache/vaediff)")
    add_sampler_flags(evaluate, families)
    add_feature_flags(evaluate)
    add_device_flag(evaluate)
    add_sampling_precision_flag(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    evaluator = commands.add_parser("evaluator", help="train (once) the classifier whose features score samples",
                                    description="Train the evaluator CNN of a data set and cache it; later "
                                    "evaluations reuse it.")
    add_dataset_flags(evaluator)
    evaluator.add_argument("--cache-dir", metavar="DIR", help="cache directory (default: ~/.cache/vaediff)")
    evaluator.add_argument("--retrain", action="store_true", help="train again even if a cached one exists")
    evaluator.set_defaults(handler=cmd_evaluator)

    real = commands.add_parser("real-fid", help="FID between a data set's training and test images (the floor)",
                               description="FID and KID, with 95% intervals, between the training and the test "
                               "images of a data set: the floor of every model's FID on it. With --features "
                               "inception, the figure papers print (CIFAR-10: train against test).")
    add_dataset_flags(real)
    add_feature_flags(real)
    real.add_argument("--train-images", type=at_most(10_000_000, 2), metavar="N",
                      help="the first N training images of a seeded shuffle (default: all)")
    real.add_argument("--test-images", type=at_most(10_000_000, 2), metavar="N",
                      help="the first N test images of a seeded shuffle (default: all)")
    real.add_argument("--seed", type=int, default=0, help="seed of the shuffles and the intervals' bootstrap")
    real.add_argument("--cache-dir", metavar="DIR", help="where evaluator networks and real features are kept "
                      "(default: ~/.cache/vaediff)")
    real.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_flag(real)
    real.set_defaults(handler=cmd_real_fid)

    compare = commands.add_parser("compare", help="compare evaluated runs in a Markdown and HTML report",
                                  description="Write DIR/report.md and DIR/report.html with tables, sample "
                                  "grids, loss curves, and for diffusion runs quality-vs-steps and guidance "
                                  "curves.")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="evaluated run directories")
    add_output_flags(compare, "report directory (refused if not empty, unless --overwrite)")
    compare.add_argument("--lang", choices=("en", "zh"), default="en", help="report language (default: en)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the sample grids and curves")
    compare.add_argument("--curve-samples", type=at_most(MAX_EVAL_SAMPLES, MIN_EVAL_SAMPLES), default=200,
                         help="samples per point of the steps and guidance curves (default: 200)")
    compare.add_argument("--no-curves", action="store_true", help="skip the steps and guidance curves")
    compare.add_argument("--minutes", type=positive_float, help="draw as many samples per curve point as fit in this "
                         "time on this host (at most --curve-samples), or leave the curves out, and say so")
    compare.add_argument("--no-ddpm-1000", action="store_true",
                         help="skip the seed's 1000-step DDPM point of the steps curve (the slowest point)")
    add_feature_flags(compare, weights=False)
    add_device_flag(compare)
    compare.set_defaults(handler=cmd_compare)

    quick = commands.add_parser("quickstart", help="the whole study in one command: EDA, 5 models, report",
                                description="EDA, then vae, cvae, diffusion (fast), latent-diffusion and flow "
                                "trained within --minutes, evaluated and compared in a report. Offline.")
    add_dataset_flags(quick)
    quick.add_argument("--out", default="runs/quickstart", metavar="DIR", help="output directory "
                       "(default: runs/quickstart)")
    quick.add_argument("--minutes", type=positive_float, default=15.0,
                       help="wall-clock budget of the whole study, measured on this host first (default: 15)")
    quick.add_argument("--work", choices=("budget", "fixed"), default="budget",
                       help="budget: fit the study to --minutes on this host; fixed: the same optimizer steps "
                       "and sample counts on any host (the same numbers for the same seed; the time varies)")
    quick.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    quick.add_argument("--resume", action="store_true", help="continue an interrupted quickstart")
    quick.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    quick.add_argument("--seeds", type=at_most(100), default=None,
                       help="train every model with this many seeds (SEED, SEED+1, ...), sharing the budget; "
                       "the report compares the recipes over seeds (default: 2 with --work fixed, 1 with a "
                       "budget, which then goes to training one network each)")
    add_report_to_flag(quick)
    add_feature_flags(quick)
    quick.add_argument("--lang", choices=("en", "zh"), default="en",
                       help="language of the report and the closing headlines (default: en)")
    add_device_flag(quick)
    quick.add_argument("--with", dest="with_models", nargs="+", metavar="MODEL",
                       help="add model types the default study leaves out: meanflow (a flow map drawing in 1-4 "
                       "steps, started from the study's own flow run; the budget planner gives it its share)")
    quick.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="fp32",
                       help="autocast precision of every run's training and of its evaluation's samples (default: "
                       "fp32; the report's grids and curves stay fp32); auto: bf16 where timing each model on "
                       "this chip finds it clearly faster, for training and for sampling apart; the budget is "
                       "planned from training steps timed in that precision")
    quick.set_defaults(handler=cmd_quickstart)

    serve = commands.add_parser("serve", help="web demo: draw images from runs in a browser",
                                description="A Gradio page to draw images from the given runs and explore VAE "
                                "latent spaces. Binds to 127.0.0.1 unless --host says otherwise.")
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run directories to offer")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=at_most(65535), default=7860, help="port, 1-65535 (default: 7860)")
    serve.add_argument("--max-images", type=at_most(MAX_GRID_IMAGES), default=64,
                       help="images per request (default: 64)")
    serve.add_argument("--max-steps", type=at_most(MAX_SAMPLING_STEPS), default=200, help="sampling steps per request "
                       "(default: 200)")
    serve.add_argument("--concurrency", type=positive_int, default=1,
                       help="generations running at once; others wait in a queue (default: 1)")
    add_device_flag(serve)
    serve.set_defaults(handler=cmd_serve)

    push = commands.add_parser("push", help="upload a run to the Hugging Face Hub (model card included)",
                               description="Upload RUN to the model repository REPO_ID with huggingface_hub, "
                               "without its resume state. The token is huggingface_hub's (HF_TOKEN or `hf auth "
                               "login`); vaediff never writes it anywhere.")
    push.add_argument("run", metavar="RUN", help="run directory")
    push.add_argument("repo_id", metavar="REPO_ID", help="NAMESPACE/NAME of the model repository (made if missing)")
    push.add_argument("--private", action="store_true", help="make a new repository private")
    push.set_defaults(handler=cmd_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    if command in FAMILY_COMMANDS:
        from vaediff.families import FAMILIES  # torch: only commands that need the registry pay for it

        args = build_parser(FAMILIES).parse_args(argv)
    else:
        args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        if getattr(args, "device", None) is None:
            handler(args)
        else:
            from vaediff.devices import use_device  # torch: only a command given --device pays for it here

            with use_device(args.device):  # every stage asks devices.compute_device
                handler(args)
    except AlreadyFinished as exc:  # --resume to a limit already reached: not an error
        clear_progress_bars()
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 0
    except VaediffError as exc:
        clear_progress_bars()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the last line of defence: a path the checks did not foresee
        clear_progress_bars()
        print(f"{PROG}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        clear_progress_bars()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
