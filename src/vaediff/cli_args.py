"""The command line's building blocks: a parser whose errors are one line, argument types that reject bad
numbers at the boundary with a message naming the value, and the flags several commands share (those of
the model families read from their registry, handed in by the caller)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

from vaediff.checks import MAX_SAMPLING_STEPS
from vaediff.constants import DATASETS, IMAGE_SIZES


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2), not a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class CommandListFormatter(argparse.HelpFormatter):
    """argparse measures sub-command names without their extra indent (2 columns), so a long name like
    `evaluator` wraps its help onto the next line; widen the column to fit."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if getattr(action, "_choices_actions", None):
            self._action_max_length += 2


# ---------------------------------------------------------------------------------------------------------
# Argument types: reject bad numbers at the boundary with a message that names the value.


def whole_number(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (and at most `maximum`: counts that must
    not run for hours)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum:,} and {maximum:,}, got {value:,}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int, nonnegative_int = whole_number(1), whole_number(0)


def at_most(maximum: int, minimum: int = 1) -> Callable[[str], int]:
    return whole_number(minimum, maximum)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object like '{\"latent\": 32}'")
    return value


def class_label(text: str) -> int:
    """A class number; the run it is drawn from checks it against its own classes (generation.check_label)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class number (0, 1, ...), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"class label must be 0 or more, got {value}")
    return value


# ---------------------------------------------------------------------------------------------------------
# Shared flags


def add_dataset_flags(parser: argparse.ArgumentParser, default: str | None = "mnist-5k") -> None:
    """--dataset, --data-dir, --image-size. `default=None` leaves --dataset unset when not given (train: a
    resumed run keeps its own data, and a --dataset given with --resume is checked against it)."""
    parser.add_argument("--dataset", default=default, metavar="NAME|PATH",
                        help=f"data set: {', '.join(DATASETS)}, an image folder (a sub-folder a class), an .npz "
                             f"file, a Hugging Face `datasets` folder (save_to_disk), .parquet or .arrow file, or "
                             f"hf:NAME[:CONFIG] (default: {default or 'mnist-5k'})")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where the files of mnist, fashion-mnist or cifar10 live (downloaded there if absent)")
    parser.add_argument("--image-size", type=int, choices=IMAGE_SIZES, metavar="S",
                        help=f"resize images to S x S ({', '.join(map(str, IMAGE_SIZES))}): centre crop to a square, then "
                             f"bilinear with antialiasing; needed for images of mixed sizes or modes")
    parser.add_argument("--image-column", metavar="NAME",
                        help="a `datasets` source's image column (default: the one of feature type Image)")
    parser.add_argument("--label-column", metavar="NAME",
                        help="a `datasets` source's label column (default: the one of type ClassLabel; none: "
                             "unlabelled)")


def add_output_flags(parser: argparse.ArgumentParser, out_help: str) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help=out_help)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


def add_sampler_flags(parser: argparse.ArgumentParser, families: dict | None) -> None:
    """--sampler, --steps, --guidance, --guidance-interval; the sampler choices are those the registered
    families' runs take (`families`: model type -> Family; None: not loaded, the run checks its own)."""
    group = parser.add_argument_group("sampling (diffusion and flow runs)")
    samplers = {}
    for model_type, family in (families or {}).items():
        for name in family.samplers:
            samplers.setdefault(name, []).append(model_type)
    by_types = {}
    for name, types in samplers.items():
        by_types.setdefault(", ".join(types), []).append(name)
    listing = "; ".join(f"{types}: {', '.join(names)}" for types, names in by_types.items())
    group.add_argument("--sampler", choices=list(samplers) or None,
                       help="the sampler (default: the run's)" + (f"; {listing}" if listing else ""))
    group.add_argument("--steps", type=at_most(MAX_SAMPLING_STEPS), help="denoising steps (default: the run's)")
    group.add_argument("--guidance", type=nonnegative_float,
                       help="classifier-free guidance scale W: eps_u + W (eps_c - eps_u); 1 = none")
    group.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LO", "HI"),
                       help="guide only at steps with LO <= t/T <= HI (0 = clean, 1 = pure noise; "
                            "default: the run's, 0 1 for the pixel presets)")


REPORT_TO = ("tensorboard", "wandb", "mlflow", "trackio", "aim", "all", "none")  # training.trackers' (kept here: `--help` imports nothing heavy)


FEATURES = ("evaluator", "inception")  # inception.FEATURES (kept here: `--help` imports nothing heavy)
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def add_feature_flags(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """--features (the space FID is ranked in) and, where FID is measured, --inception-weights."""
    parser.add_argument("--features", choices=FEATURES, default="evaluator",
                        help="evaluator: FID in the features of vaediff's evaluator for this data set (default); "
                        "inception: also FID and KID in Inception-v3 features, as papers report them"
                        + ("" if weights else ", ranked in the report (read from each run's metrics.json)"))
    if weights:
        parser.add_argument("--inception-weights", metavar="PATH",
                            help=f"torch-fidelity's Inception-v3 weights file ({INCEPTION_FILE}), for "
                            "--features inception; nothing is downloaded")


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", metavar="DEVICE", help="compute on cpu, cuda or cuda:N (default: $VAEDIFF_DEVICE, "
                        "else the GPU where there is one, else the CPU)")


def add_sampling_precision_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="fp32",
                        help="autocast precision of sampling (default: fp32, the same images on any host); auto: "
                        "bf16 where drawing a few images on this chip is clearly faster with it (cached per host "
                        "and model); fp16 needs a GPU")


def add_report_to_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report-to", choices=REPORT_TO, default="tensorboard",
                        help="experiment tracker through Accelerate: losses, learning rate, throughput and sample "
                        "grids (default: tensorboard, into RUN/logs/; `tensorboard --logdir RUN/logs` shows it)")


def add_family_flags(parser: argparse.ArgumentParser, families: dict) -> None:
    """Each family's own options (Family.options) as flags, in a group named after the model types that
    take them; an option several families share is one flag."""
    takers: dict[str, list[str]] = {}
    options = {}
    for model_type, family in families.items():
        for option in family.options:
            first = options.setdefault(option.name, option)
            if (first.default, first.choices, first.switch, first.type) != (option.default, option.choices,
                                                                             option.switch, option.type):
                raise ValueError(f"option {option.name!r} of {model_type} differs from {takers[option.name][0]}'s "
                                 f"(default, choices, switch or type): one flag cannot be both")
            takers.setdefault(option.name, []).append(model_type)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, option in options.items():
        title = " / ".join(takers[name])
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        if option.switch:
            group.add_argument(option.flag, dest=name, action="store_true", help=option.help)
        else:
            group.add_argument(option.flag, dest=name, choices=option.choices, metavar=option.metavar,
                               type=option.type, help=option.help)
