"""A web demo (Gradio): draw images from trained runs, and walk a VAE's latent space.

Safety by construction: the page chooses runs by name from those given on the command line (it never
sends a file path), every number is validated server-side with a readable message, requests beyond the
limits are refused, generations are queued with a concurrency limit, and the server binds to 127.0.0.1
unless told otherwise.

The HTTP API (gradio's /gradio_api/...) answers every bad request with a message, never `{"error": null}`
or a stack trace: the handlers take the raw values (preprocess=False) and check their types too, so a
dict or list where a number or a name belongs is refused by name; a call with too few or too many inputs
is refused before the handler runs (`_check_input_count`); an unknown API name, fn_index or argument
gets a 4xx and one line (`_refusals`); and `show_error=True`, so anything else that fails still carries
its message. Direct POSTs to /run/... that would skip the queue are closed (api_open=False).
"""

from __future__ import annotations

import errno
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaediff.checks import MAX_GRID_IMAGES, MAX_SAMPLING_STEPS, check_count
from vaediff.errors import ConfigError, VaediffError
from vaediff.families import check_command, class_names_of, family_of, load_run, run_dataset
from vaediff.figures import tile
from vaediff.generation import draw

MAX_PORT = 65535


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


def check_plain(value, name: str, what: str):
    """`value` unless it is a container: the HTTP API can send a dict or a list where the page sends text."""
    if isinstance(value, (dict, list, tuple, set)):
        raise InputError(f"{name} must be {what}, got a {type(value).__name__}")
    return value


def parse_int(text, name: str, low: int, high: int) -> int:
    check_plain(text, name, "a whole number")
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
    check_plain(text, name, "a number")
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise InputError(f"{name} must be a number between {low:g} and {high:g}, got {text!r}")
    return value


def parse_class(text, name: str, num_classes: int) -> int:
    """A class as the page sends it ("3: sneaker") or as an API client may (3, "3")."""
    check_plain(text, name, "a class number")
    return parse_int(str(text).split(":")[0], name, 0, num_classes - 1)


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
        self.runs, self.class_names, seen = {}, {}, {}
        for run_dir in run_dirs:
            same = seen.setdefault(Path(run_dir).resolve(), run_dir)
            if same is not run_dir:
                raise VaediffError(f"{run_dir} is given twice (also as {same}); name each run once")
            run = load_run(run_dir)
            check_command(run.model_type, "serve")
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
        if check_plain(name, "run", "a run name") not in self.runs:
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
                label = parse_class(label_text, "class", run.num_classes)
            options = {}
            if run.has_sampler:  # numbers parsed and bounded here; the rules are the command line's
                options = run.sampler_settings(sampler=str(check_plain(sampler, "sampler", "a sampler name")),
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
            label = torch.tensor([parse_class(label_text, "class", run.num_classes)]) if run.conditional else None
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
            start = parse_class(start_text, "first class", run.num_classes)
            end = parse_class(end_text, "second class", run.num_classes)
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
                # the samplers of the served runs' families (the registry's), the first run's default selected
                samplers = list(dict.fromkeys(s for r in demo.runs.values() for s in family_of(r.model_type).samplers))
                with_sampler = [r for r in demo.runs.values() if r.has_sampler]
                default = (with_sampler[0].sampler_settings() if with_sampler
                           else {"sampler": "-", "steps": 20, "guidance": 2.0})
                sampler = gr.Dropdown(samplers or ["-"], value=default["sampler"], label="sampler", elem_id="sampler",
                                      allow_custom_value=True)
                steps = gr.Textbox(str(default["steps"]), label="steps", elem_id="steps")
                guidance = gr.Textbox(f"{default['guidance']:g}", label="guidance scale", elem_id="guidance")
                seed = gr.Textbox("0", label="seed", elem_id="seed")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            status = gr.Markdown(elem_id="status")
            picture = gr.Image(label="samples", format="png", elem_id="picture", interactive=False)
            button.click(demo.generate, [run, label, count, sampler, steps, guidance, seed], [picture, status],
                         api_name="generate", preprocess=False)
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
                                   api_name=False, preprocess=False)
                with gr.Row():
                    start = gr.Dropdown(class_choices, value=class_choices[0], label="from class",
                                        allow_custom_value=True)
                    end = gr.Dropdown(class_choices, value=class_choices[1], label="to class", allow_custom_value=True)
                    go = gr.Button("Interpolate")
                line_picture = gr.Image(label="interpolation", format="png", interactive=False)
                line_status = gr.Markdown()
                go.click(demo.interpolate, [vae_run, start, end], [line_picture, line_status], api_name="interpolate",
                         preprocess=False)
    app.validate_inputs = _check_input_count  # instead of gradio's, which lets extra inputs through
    app.queue(default_concurrency_limit=demo.limits.concurrency, max_size=demo.limits.queue_size,
              api_open=False)  # every call waits in the queue: POST /run/... (which would skip it) is closed
    return app


def _check_input_count(block_fn, inputs: list) -> None:
    """A call with too few or too many inputs, refused in one line that names the inputs (gradio's own
    check ignores extra inputs and lists component objects)."""
    from gradio import Error

    if len(inputs) != len(block_fn.inputs):
        names = ", ".join(str(getattr(block, "label", None) or block.get_block_name()) for block in block_fn.inputs)
        raise Error(f"{block_fn.name} takes {len(block_fn.inputs)} inputs ({names}), got {len(inputs)}",
                    print_exception=False)


def _api_names(app) -> list[str]:
    return sorted(f"/{fn.api_name}" for fn in app.fns.values() if getattr(fn, "api_visibility", "public") == "public")


def _refusals(app) -> dict:
    """FastAPI exception handlers for the errors gradio's routes raise on a bad request before any handler
    runs (an unknown API name or fn_index: FnIndexInferError or KeyError; an unknown argument: TypeError,
    ValueError): a 4xx and one line instead of a 500 with a stack trace in the log. Other routes keep
    their own answer."""
    from fastapi.responses import JSONResponse
    from gradio.route_utils import FnIndexInferError

    offered = _api_names(app)

    async def refuse(request, exc: Exception):
        name = request.path_params.get("api_name")
        if name is None and isinstance(exc, KeyError) and request.url.path.endswith("/queue/join"):
            return JSONResponse({"error": f"unknown fn_index {exc.args[0]!r}"}, status_code=404)
        if name is None:
            raise exc
        if f"/{name}" not in offered:
            return JSONResponse({"error": f"unknown API name /{name}; this demo offers {', '.join(offered)}"},
                                status_code=404)
        return JSONResponse({"error": f"/{name}: {' '.join(str(exc).split())}"}, status_code=400)

    return dict.fromkeys((FnIndexInferError, KeyError, TypeError, ValueError), refuse)


def check_port(host: str, port: int) -> None:
    """Refuse a port outside 1..65535, or one that cannot be bound on `host` (another server has it), with
    one line, before anything is loaded or announced. Bound as uvicorn binds (SO_REUSEADDR) and closed."""
    check_count(port, "--port", MAX_PORT)
    try:
        family, kind, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot serve on host {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
    with socket.socket(family, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(port_in_use(host, port)) from None
            raise ConfigError(f"cannot serve on port {port} of {host}: {exc.strerror or exc}") from None


def port_in_use(host: str, port: int) -> str:
    return f"port {port} on {host} is in use; pass --port N"


def serve(run_dirs: list[str | Path], host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits()) -> None:
    """Start the web demo, announce its address once it is up, and block until Ctrl-C. A port outside
    1..65535 (0 too: the address is announced, so it must be known) or in use is a ConfigError."""
    check_port(host, port)
    app = build_app(Demo(run_dirs, limits))
    try:
        app.launch(server_name=host, server_port=port, quiet=True, show_error=True, ssr_mode=False,
                   prevent_thread_lock=True, app_kwargs={"exception_handlers": _refusals(app)})
    except OSError:  # taken between the check and the launch: gradio's "Cannot find empty port", in our words
        raise ConfigError(port_in_use(host, port)) from None
    print(f"vaediff demo on http://{host}:{port} (Ctrl-C to stop)", flush=True)
    app.block_thread()
