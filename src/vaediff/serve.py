"""A web demo (Gradio): draw images from trained runs, and walk a VAE's latent space.

Safety by construction: the page chooses runs by name from those given on the command line (it never
sends a file path), every number is validated server-side with a readable message, requests beyond the
limits are refused, generations are queued with a concurrency limit, and the server binds to 127.0.0.1
unless told otherwise.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaediff.checks import MAX_GRID_IMAGES, MAX_SAMPLING_STEPS, check_count
from vaediff.constants import FLOW_SAMPLERS, SAMPLERS
from vaediff.errors import VaediffError
from vaediff.families import class_names_of, load_run, run_dataset
from vaediff.figures import tile
from vaediff.generation import draw


@dataclass(frozen=True)
class Limits:
    max_images: int = 64       # images per request
    max_steps: int = 200       # sampling steps per request
    max_guidance: float = 20.0
    concurrency: int = 1       # generations running at once (a CPU has few cores to share)
    queue_size: int = 64       # requests waiting; beyond this the page says the server is busy

    def __post_init__(self) -> None:  # the same bounds as the command line's
        check_count(self.max_images, "--max-images", MAX_GRID_IMAGES)
        check_count(self.max_steps, "--max-steps", MAX_SAMPLING_STEPS)
        check_count(self.concurrency, "--concurrency", 64)


class InputError(ValueError):
    """A bad value from the page: shown as a message, never as a stack trace."""


def parse_int(text, name: str, low: int, high: int) -> int:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"{name} must be a whole number, got {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise InputError(f"{name} must be a whole number, got {text!r}")
    if not low <= int(value) <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {int(value)}")
    return int(value)


def parse_float(text, name: str, low: float, high: float) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise InputError(f"{name} must be a number between {low:g} and {high:g}, got {text!r}")
    return value


def to_picture(images: torch.Tensor, columns: int | None = None, scale: int = 3) -> np.ndarray:
    """(N, C, S, S) in [0, 1] -> an RGB uint8 grid, each pixel `scale` x `scale`: grayscale as black ink on
    white (the digits' convention), colour as it is."""
    columns = columns or min(8, len(images))
    grid = tile(images, columns, padding=1)
    if grid.ndim == 2:
        grid = np.repeat(1.0 - grid[:, :, None], 3, axis=2)
    grid = np.kron(grid, np.ones((scale, scale, 1), dtype=np.float32))
    return (grid * 255).round().astype(np.uint8)


class Demo:
    """The runs and the request handlers, independent of Gradio (the tests call them directly)."""

    def __init__(self, run_dirs: list[str | Path], limits: Limits = Limits()):
        if not run_dirs:
            raise VaediffError("give at least one run directory")
        self.limits = limits
        self.runs, self.class_names = {}, {}
        for run_dir in run_dirs:
            run = load_run(run_dir)
            name = Path(run_dir).name
            if name in self.runs:
                name = str(run_dir)
            self.runs[name] = run
            self.class_names[name] = class_names_of(run.config)
        self._latent_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def run_names(self, vae_only: bool = False) -> list[str]:
        return [n for n, r in self.runs.items() if not vae_only or r.has_latent_space]

    def _run(self, name):
        if name not in self.runs:
            raise InputError(f"unknown run {name!r}; choose one of {', '.join(self.runs)}")
        return self.runs[name]

    def generate(self, run_name, label_text, count_text, sampler, steps_text, guidance_text, seed_text
                 ) -> tuple[np.ndarray | None, str]:
        """Draw images; returns (picture or None, status message)."""
        try:
            run = self._run(run_name)
            count = parse_int(count_text, "number of images", 1, self.limits.max_images)
            seed = parse_int(seed_text, "seed", 0, 2**31 - 1)
            label = None
            if run.conditional:
                label = parse_int(str(label_text).split(":")[0], "class", 0, run.num_classes - 1)
            options = {}
            if run.has_sampler:  # numbers parsed and bounded here; the rules are the command line's
                options = run.sampler_settings(sampler=str(sampler),
                                               steps=parse_int(steps_text, "steps", 1, self.limits.max_steps),
                                               guidance=parse_float(guidance_text, "guidance", 0,
                                                                    self.limits.max_guidance))
            started = time.perf_counter()
            with self._lock:  # one model call at a time per process: torch threads are shared anyway
                images, _ = draw(run, count, label, seed, **options)
            seconds = time.perf_counter() - started
        except (InputError, VaediffError) as exc:
            return None, f"⚠️ {exc}"
        what = f"class {self.class_names[run_name][label]}" if label is not None else "images"
        return to_picture(images), (f"{count} {what} from {run_name} in {seconds:.2f} s "
                                    f"({count / seconds:.1f} images/s)")

    def _latent_axes(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Principal directions (2, latent) and class-mean latents (10, latent) of the test set."""
        if name not in self._latent_cache:
            run = self.runs[name]
            test = run_dataset(run.config, name).test
            mu = run.latent_means(test.as_float(slice(0, 2000)), test.labels[:2000])
            centred = mu - mu.mean(0)
            _, _, directions = torch.linalg.svd(centred, full_matrices=False)
            scale = centred @ directions[:2].T
            axes = directions[:2] * scale.std(0).unsqueeze(1)  # one slider unit = one standard deviation
            means = torch.stack([mu[test.labels[:2000] == c].mean(0) for c in range(run.num_classes)])
            self._latent_cache[name] = (axes, means)
        return self._latent_cache[name]

    def explore(self, run_name, first, second, label_text) -> tuple[np.ndarray | None, str]:
        """Decode the latent point `first` * axis 1 + `second` * axis 2 (for a CVAE, of the chosen class)."""
        try:
            run = self._run(run_name)
            if not run.has_latent_space:
                raise InputError(f"{run_name} is a {run.model_type} run; latent sliders need a VAE or CVAE")
            a = parse_float(first, "direction 1", -4, 4)
            b = parse_float(second, "direction 2", -4, 4)
            axes, _ = self._latent_axes(run_name)
            label = torch.tensor([parse_int(str(label_text).split(":")[0], "class", 0, run.num_classes - 1)]) if run.conditional else None
            image = run.decode((a * axes[0] + b * axes[1]).unsqueeze(0), label)
        except (InputError, VaediffError) as exc:
            return None, f"⚠️ {exc}"
        return to_picture(image, scale=8), f"direction 1 = {a:+.1f} sd, direction 2 = {b:+.1f} sd"

    def interpolate(self, run_name, start_text, end_text) -> tuple[np.ndarray | None, str]:
        """Decode 10 points on the line between two classes' mean latents (CVAE: the label blends too)."""
        try:
            run = self._run(run_name)
            if not run.has_latent_space:
                raise InputError(f"{run_name} is a {run.model_type} run; interpolation needs a VAE or CVAE")
            start = parse_int(str(start_text).split(":")[0], "first class", 0, run.num_classes - 1)
            end = parse_int(str(end_text).split(":")[0], "second class", 0, run.num_classes - 1)
            _, means = self._latent_axes(run_name)
            weights = torch.linspace(0, 1, 10).unsqueeze(1)
            latents = means[start] * (1 - weights) + means[end] * weights
            labels = None
            if run.conditional:
                eye = torch.eye(run.num_classes)
                labels = eye[start] * (1 - weights) + eye[end] * weights  # soft one-hot labels
            images = run.decode(latents, labels)
        except (InputError, VaediffError) as exc:
            return None, f"⚠️ {exc}"
        names = self.class_names[run_name]
        return to_picture(images, columns=10, scale=4), f"{names[start]} → {names[end]}"


def build_app(demo: Demo):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, no network from the demo
    import gradio as gr  # seconds to import; only the web demo needs it

    names = demo.run_names()
    first = demo.runs[names[0]]
    class_choices = [f"{i}: {n}" for i, n in enumerate(demo.class_names[names[0]])]
    with gr.Blocks(title="vaediff demo") as app:
        gr.Markdown("# vaediff demo\nDraw images from trained runs. Numbers are checked on the server; "
                    f"at most {demo.limits.max_images} images and {demo.limits.max_steps} steps per request.")
        with gr.Tab("Generate"):
            with gr.Row():
                run = gr.Dropdown(names, value=names[0], label="run", allow_custom_value=True, elem_id="run")
                label = gr.Dropdown(class_choices, value=class_choices[0], label="class", allow_custom_value=True,
                                    elem_id="label")
                count = gr.Textbox("16", label=f"number of images (1-{demo.limits.max_images})", elem_id="count")
            with gr.Row():
                default = first.sampler_settings() or {"sampler": "dpm", "steps": 20, "guidance": 2.0}
                sampler = gr.Dropdown(list(SAMPLERS + FLOW_SAMPLERS), value=default["sampler"], label="sampler", elem_id="sampler",
                                      allow_custom_value=True)
                steps = gr.Textbox(str(default["steps"]), label="steps", elem_id="steps")
                guidance = gr.Textbox(f"{default['guidance']:g}", label="guidance scale", elem_id="guidance")
                seed = gr.Textbox("0", label="seed", elem_id="seed")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            status = gr.Markdown(elem_id="status")
            picture = gr.Image(label="samples", format="png", elem_id="picture", interactive=False)
            button.click(demo.generate, [run, label, count, sampler, steps, guidance, seed], [picture, status],
                         api_name="generate")
        vae_names = demo.run_names(vae_only=True)
        if vae_names:
            with gr.Tab("VAE latent space"):
                vae_run = gr.Dropdown(vae_names, value=vae_names[0], label="VAE run", allow_custom_value=True)
                with gr.Row():
                    one = gr.Slider(-3, 3, value=0, step=0.1, label="direction 1 (first principal axis, in sd)")
                    two = gr.Slider(-3, 3, value=0, step=0.1, label="direction 2 (second principal axis, in sd)")
                    vae_label = gr.Dropdown(class_choices, value=class_choices[0], label="class (CVAE)",
                                            allow_custom_value=True)
                explore_picture = gr.Image(label="decoded", format="png", interactive=False)
                explore_status = gr.Markdown()
                for control in (one, two, vae_label):
                    control.change(demo.explore, [vae_run, one, two, vae_label], [explore_picture, explore_status],
                                   api_name=False)
                with gr.Row():
                    start = gr.Dropdown(class_choices, value=class_choices[0], label="from class",
                                        allow_custom_value=True)
                    end = gr.Dropdown(class_choices, value=class_choices[1], label="to class", allow_custom_value=True)
                    go = gr.Button("Interpolate")
                line_picture = gr.Image(label="interpolation", format="png", interactive=False)
                line_status = gr.Markdown()
                go.click(demo.interpolate, [vae_run, start, end], [line_picture, line_status], api_name="interpolate")
    app.queue(default_concurrency_limit=demo.limits.concurrency, max_size=demo.limits.queue_size)
    return app


def serve(run_dirs: list[str | Path], host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits()) -> None:
    """Start the web demo and block until Ctrl-C."""
    app = build_app(Demo(run_dirs, limits))
    print(f"vaediff demo on http://{host}:{port} (Ctrl-C to stop)", flush=True)
    app.launch(server_name=host, server_port=port, quiet=True, show_error=False, ssr_mode=False)
