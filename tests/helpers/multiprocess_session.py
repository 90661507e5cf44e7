"""Run under `torchrun --nproc_per_node 2`: train every model type briefly, then resume each, through the
real CLI (one launch for all of them, so process start-up is paid once)."""

import json
import sys
from pathlib import Path

from vaediff.cli import main

root = Path(sys.argv[1])
TINY = {
    "vae": {"hidden": 64, "latent": 8},
    "cvae": {"hidden": 64, "latent": 8},
    "diffusion": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8,
                  "sampling_steps": 3},
    "latent-diffusion": {"autoencoder": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4},
                         "denoiser": {"block_out_channels": [16], "norm_num_groups": 4, "attention_head_dim": 8,
                                      "sampling_steps": 3}},
}
codes = {}
for model_type, overrides in TINY.items():
    common = ["train", model_type, "--out", str(root / model_type), "--batch-size", "16",
              "--model-config", json.dumps(overrides), "--checkpoint-every", "2"]
    codes[f"{model_type}:first"] = main([*common, "--max-steps", "3"])
    codes[f"{model_type}:resume"] = main([*common, "--max-steps", "5", "--resume"])
# the equal-first-step check: one optimizer step of batch 32 split over the two processes
codes["first-step"] = main(["train", "vae", "--out", str(root / "first-step"), "--max-steps", "1",
                            "--batch-size", "32"])
failed = {name: code for name, code in codes.items() if code != 0}
if failed:
    print(f"failed: {failed}", file=sys.stderr)
sys.exit(1 if failed else 0)
