"""Run under `torchrun --nproc_per_node 2`: train every model type of the registry briefly (at its family's
smallest size, each recipe its family names), then resume each, through the real CLI (one launch for all of
them, so process start-up is paid once)."""

import itertools
import json
import sys
from pathlib import Path

from vaediff.cli import main
from vaediff.families import FAMILIES, train_run

MEANFLOW_FIRST_STEP = ["train", "meanflow", "--max-steps", "1", "--batch-size", "32", "--lr", "0.01",
                       "--model-config", json.dumps(FAMILIES["meanflow"].smallest)]


def recipes():
    """(run directory name, model type, options as flags) for every model type and variant."""
    for model_type, family in FAMILIES.items():
        names = sorted(family.variants)
        for values in itertools.product(*(family.variants[n] for n in names)):
            flags = [item for name, value in zip(names, values, strict=True) for item in (f"--{name}", value)]
            suffix = "".join(f"-{value}" for name, value in zip(names, values, strict=True)
                             if value != family.defaults().get(name))  # the default recipe keeps the bare name
            yield model_type + suffix, model_type, flags


if __name__ == "__main__":
    root = Path(sys.argv[1])
    codes = {}
    for name, model_type, flags in recipes():
        common = ["train", model_type, "--out", str(root / name), "--batch-size", "16", *flags,
                  "--model-config", json.dumps(FAMILIES[model_type].smallest), "--checkpoint-every", "2"]
        codes[f"{name}:first"] = main([*common, "--max-steps", "3"])
        codes[f"{name}:resume"] = main([*common, "--max-steps", "5", "--resume"])
    # the equal-first-step check: one optimizer step of batch 32 split over the two processes
    codes["first-step"] = main(["train", "vae", "--out", str(root / "first-step"), "--max-steps", "1",
                                "--batch-size", "32"])
    # meanflow's gradient flows through one forward of the wrapped model while its JVP uses the bare module:
    # the same one-step check shows its gradients are still averaged over the processes
    codes["first-step-meanflow"] = main(MEANFLOW_FIRST_STEP + ["--out", str(root / "first-step-meanflow")])
    # a wall-clock budget, checkpoints every 0.3 s and a row each epoch: each process's clock says something
    # else, and a process that stopped or checkpointed alone would leave the other waiting for ever
    try:
        train_run("vae", root / "minutes", options={"model": FAMILIES["vae"].smallest}, progress=False, figures=False,
                  train_options={"minutes": 0.1, "batch_size": 16, "checkpoint_minutes": 0.005})
        codes["minutes"] = 0
    except Exception as exc:  # noqa: BLE001 - reported with the others
        print(f"minutes: {exc!r}", file=sys.stderr)
        codes["minutes"] = 1
    failed = {name: code for name, code in codes.items() if code != 0}
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    sys.exit(1 if failed else 0)
