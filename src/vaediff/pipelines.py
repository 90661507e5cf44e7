"""A diffusers pipeline over vaediff runs: `VaediffPipeline.from_pretrained(RUN)` loads any run that draws
by a sampler (diffusion, latent-diffusion, flow, latent-flow, and any later family of that kind) and
`pipe(class_labels=[3] * 8, num_inference_steps=8, guidance_scale=2.0, generator=g).images` draws PIL images,
exactly what `vaediff sample` draws with the same seed: it is the same code (the run's own `generate`).

Training writes RUN/model_index.json (`_class_name` ["vaediff_pipeline", "VaediffPipeline"], and the run's
diffusers components `unet` and `scheduler`) and RUN/vaediff_pipeline.py (a copy of hub_pipeline.py), so
stock `DiffusionPipeline.from_pretrained(RUN, trust_remote_code=True)` loads this class too; the run itself is
then loaded on the first call, from the folder the pipeline came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from PIL import Image

from vaediff.errors import ConfigError
from vaediff.families import load_run


class VaediffPipeline(DiffusionPipeline):
    """Draw from a vaediff run with diffusers' pipeline interface."""

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.run = None  # the vaediff run whose `generate` draws (set by from_pretrained)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **unused) -> VaediffPipeline:
        """Load the run directory `pretrained_model_name_or_path` (a local path: what `vaediff train` wrote)."""
        run = load_run(pretrained_model_name_or_path)
        if not run.has_sampler:
            raise ConfigError(f"{pretrained_model_name_or_path} is a {run.model_type} run, which draws in one "
                              f"decoder pass: no diffusion pipeline; use `vaediff sample`")
        pipeline = cls(unet=run.model.unet, scheduler=_load_scheduler(run.run_dir))
        pipeline.run = run
        return pipeline

    @torch.no_grad()
    def __call__(self, class_labels: list[int] | torch.Tensor | None = None, num_images: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 generator: torch.Generator | None = None, sampler: str | None = None,
                 output_type: str = "pil") -> ImagePipelineOutput:
        """`class_labels` (one per image; an unconditional run takes `num_images`), the run's sampler
        settings where none is given; `output_type` "pil", "np" (N, H, W, C floats in [0, 1]) or "pt"."""
        if self.run is None:  # made by stock DiffusionPipeline.from_pretrained(RUN): the run is where it came from
            self.run = load_run(self.name_or_path)
        run = self.run
        if run.conditional:
            if class_labels is None:
                raise ConfigError("this run is class-conditional: give class_labels, one per image")
            labels = torch.as_tensor(class_labels, dtype=torch.long).flatten()
            if labels.numel() == 0 or labels.min() < 0 or labels.max() >= run.num_classes:
                raise ConfigError(f"class_labels must be classes of this run, 0..{run.num_classes - 1}")
            count = len(labels)
        else:
            count, labels = num_images or (len(class_labels) if class_labels is not None else 1), None
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        images = run.generate(count, labels, generator, sampler=sampler, steps=num_inference_steps,
                              guidance=guidance_scale)
        if output_type == "pt":
            return ImagePipelineOutput(images=images)
        array = images.permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "np":
            return ImagePipelineOutput(images=array)
        return ImagePipelineOutput(images=[to_pil(image) for image in array])


def to_pil(image: np.ndarray) -> Image.Image:
    """(H, W, C) floats in [0, 1] -> an 8-bit PIL image (grayscale for one channel)."""
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)


def _load_scheduler(run_dir: Path):
    """RUN/scheduler/ with the diffusers class its config names."""
    import diffusers

    from vaediff.runs import read_json

    name = read_json(run_dir / "scheduler" / "scheduler_config.json")["_class_name"]
    return getattr(diffusers, name).from_pretrained(run_dir / "scheduler")
