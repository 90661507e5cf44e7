"""A diffusers pipeline over vaediff runs draws exactly what `vaediff sample` draws with the same seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from vaediff.errors import ConfigError
from vaediff.families import FAMILIES, load_run
from vaediff.generation import draw
from vaediff.pipelines import VaediffPipeline


@pytest.mark.parametrize("model_type", ["diffusion", "flow"])
def test_the_pipeline_draws_what_vaediff_sample_draws(cli, tmp_path, model_type):
    run_dir = tmp_path / model_type
    code, _, err = cli("train", model_type, "--out", run_dir, "--max-steps", "2", "--batch-size", "8",
                       "--report-to", "none", "--model-config", json.dumps(FAMILIES[model_type].smallest))
    assert code == 0, err
    index = json.loads((run_dir / "model_index.json").read_text())
    assert index["_class_name"] == ["vaediff_pipeline", "VaediffPipeline"] and index["unet"] == ["diffusers", "UNet2DModel"]
    pipe = VaediffPipeline.from_pretrained(run_dir)
    assert isinstance(pipe, DiffusionPipeline) and pipe.unet is not None and pipe.scheduler is not None
    out = pipe(class_labels=[3] * 8, num_inference_steps=2, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(5))
    assert len(out.images) == 8 and all(isinstance(image, Image.Image) for image in out.images)
    # `vaediff sample RUN --label 3 --n 8 --steps 2 --guidance 2 --seed 5` draws these with draw()
    images, _ = draw(load_run(run_dir), 8, label=3, seed=5, steps=2, guidance=2.0)
    expected = (images.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)[..., 0]
    assert all(np.array_equal(np.asarray(image), want) for image, want in zip(out.images, expected, strict=True))
    with pytest.raises(ConfigError, match="class_labels"):
        pipe(class_labels=[10], num_inference_steps=2)
    # stock diffusers finds the class where its rules for custom pipelines allow: a module beside the weights
    stock = DiffusionPipeline.from_pretrained(run_dir, trust_remote_code=True)
    again = stock(class_labels=[3] * 8, num_inference_steps=2, guidance_scale=2.0,
                  generator=torch.Generator().manual_seed(5))
    assert type(stock).__name__ == "VaediffPipeline"
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again.images, out.images, strict=True))


def test_a_vae_run_has_no_pipeline(cli, tmp_path):
    code, _, err = cli("train", "vae", "--out", tmp_path / "vae", "--max-steps", "2", "--report-to", "none",
                       "--model-config", json.dumps(FAMILIES["vae"].smallest))
    assert code == 0, err
    assert not (tmp_path / "vae" / "model_index.json").exists()
    with pytest.raises(ConfigError, match="one decoder pass"):
        VaediffPipeline.from_pretrained(tmp_path / "vae")
