"""A model card in every run: RUN/README.md as huggingface_hub writes and reads them.

YAML metadata first (library, tags, data set, and a model-index whose results are metrics.json's numbers,
each with its 95% interval under `vaediff.metrics`), then what the model is, the command that trained it,
its data, how to draw from it with vaediff (and with stock diffusers where its weights are in diffusers'
layout), its sample grid and its metrics. Training writes it at the end; `evaluate` writes it again with
the metrics. The hub's own parser (`huggingface_hub.ModelCard.load`) reads it back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from vaediff.runs import CONFIG_FILE, atomic_write_text, read_json

CARD_FILE = "README.md"
# metrics.json's numbers the card reports: key, name on the hub, direction
# (FID and KID named with their feature space: the hub's readers take a bare "FID" for Inception's)
CARD_METRICS = (("fid", "FID (vaediff evaluator features)", "lower"), ("kid", "KID (vaediff evaluator features)", "lower"),
                ("inception_fid", "FID (Inception-v3)", "lower"), ("inception_kid", "KID (Inception-v3)", "lower"),
                ("precision", "precision", "higher"),
                ("recall", "recall", "higher"), ("class_accuracy", "class accuracy", "higher"),
                ("cas", "CAS", "higher"), ("bits_per_dim", "bits/dim", "lower"))


def _number(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, dict):  # KID: {"mean", "std"}
        value = value.get("mean")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _card_data(config: dict, metrics: dict | None, conditional: bool):
    from huggingface_hub import EvalResult, ModelCardData  # imported when a card is written

    settings, model_type = config.get("settings", {}), config.get("model_type", "")
    dataset = settings.get("dataset", "")
    results, numbers = [], {}
    for key, name, direction in CARD_METRICS:
        value = _number(metrics or {}, key)
        if value is None:
            continue
        interval = (metrics.get("ci95") or {}).get(key)
        numbers[key] = {"value": value, "ci95": interval, "better": direction}
        results.append(EvalResult(task_type="unconditional-image-generation", dataset_type=Path(dataset).name,
                                  dataset_name=Path(dataset).name, metric_type=key, metric_name=name,
                                  metric_value=round(value, 6), dataset_split="test"))
    tags = ["vaediff", model_type, "class-conditional" if conditional else "unconditional", "image-generation"]
    extra = {"vaediff": {"model_type": model_type, "metrics": numbers,
                         "num_samples": (metrics or {}).get("num_samples")}} if numbers else {}
    return ModelCardData(library_name="vaediff", tags=tags, datasets=[Path(dataset).name] if dataset else None,
                         model_name=f"{model_type} on {Path(dataset).name}", eval_results=results or None,
                         **extra)


def card_text(run_dir: Path, summary: str, diffusers_folders: tuple[str, ...] = (),
              metrics: dict | None = None, conditional: bool = False) -> str:
    """The card of the run in `run_dir` (its config.json), `summary` saying what the model is."""
    config = read_json(run_dir / CONFIG_FILE)
    settings, model_type = config.get("settings", {}), config.get("model_type", "")
    shape = settings.get("data_shape", {})
    data = _card_data(config, metrics, conditional)
    recon = (metrics or {}).get("autoencoder_fid")
    summary = summary.replace("{recon}", f"{recon:.3g}" if isinstance(recon, int | float) else "measured by `evaluate`")
    lines = [f"# {model_type} on {Path(settings.get('dataset', '?')).name}", "",
             f"A `{model_type}` model trained with vaediff. {summary}".strip(),
             "", "## Training", "", f"```bash\n{config.get('command', '')}\n```", "",
             f"Data: `{settings.get('dataset')}` ({settings.get('data_source', '')}), "
             f"{shape.get('channels', '?')} x {shape.get('image_size', '?')} x {shape.get('image_size', '?')} images, "
             f"{shape.get('num_classes', '?')} classes: {', '.join(settings.get('class_names') or [])}.", "",
             "## Drawing samples", "", "```bash", "vaediff sample RUN --out grid.png   # RUN: this directory", "```"]
    if diffusers_folders:
        lines += ["", "Its weights are in diffusers' layout: "
                  + ", ".join(f"`{folder}/`" for folder in diffusers_folders)
                  + " load with `from_pretrained` (e.g. `UNet2DModel.from_pretrained(\"RUN/unet\")`)."]
    if (run_dir / PIPELINE_INDEX).is_file():
        lines += ["", "With diffusers (vaediff installed; the pipeline class is in `vaediff_pipeline.py`):", "",
                  "```python", "import torch", "from diffusers import DiffusionPipeline", "",
                  "pipe = DiffusionPipeline.from_pretrained(\"RUN\", trust_remote_code=True)",
                  "images = pipe(class_labels=[3] * 8, generator=torch.Generator().manual_seed(0)).images", "```"]
    if (run_dir / "samples.png").is_file():
        lines += ["", "![samples](samples.png)"]
    if metrics:
        lines += ["", "## Metrics", "", f"On {metrics.get('num_samples', '?')} samples, 95% intervals "
                  "(`vaediff evaluate`; FID and KID in the features of vaediff's evaluator network, not Inception):",
                  "", "| metric | value | 95% interval |", "|---|---|---|"]
        for key, entry in data.to_dict().get("vaediff", {}).get("metrics", {}).items():
            low_high = entry["ci95"]
            interval = f"[{low_high[0]:.4g}, {low_high[1]:.4g}]" if low_high else "–"
            lines.append(f"| {key} | {entry['value']:.4g} | {interval} |")
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


def write_model_card(run, summary: str, metrics: dict | None = None, out_dir: str | Path | None = None) -> Path:
    """Write the card of `run` (a loaded families.base.Run) into RUN/README.md (or into `out_dir`, beside
    metrics.json written elsewhere); returns its path."""
    path = Path(out_dir or run.run_dir) / CARD_FILE
    atomic_write_text(path, card_text(Path(run.run_dir), summary, run.diffusers_folders, metrics, run.conditional))
    return path


PIPELINE_INDEX = "model_index.json"
PIPELINE_MODULE = "vaediff_pipeline"


def write_pipeline_index(run) -> Path | None:
    """RUN/model_index.json for a run that draws by a sampler with a diffusers UNet and scheduler: the folder
    then reads as a diffusers pipeline (vaediff.pipelines.VaediffPipeline). None for other runs."""
    if not run.has_sampler or not {"unet", "scheduler"} <= set(run.diffusers_folders):
        return None
    import diffusers

    scheduler = read_json(Path(run.run_dir) / "scheduler" / "scheduler_config.json")["_class_name"]
    index = {"_class_name": [PIPELINE_MODULE, "VaediffPipeline"], "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", scheduler]}
    path = Path(run.run_dir) / PIPELINE_INDEX
    # the module diffusers imports the class from (vaediff/hub_pipeline.py, a file of this package, copied)
    atomic_write_text(Path(run.run_dir) / f"{PIPELINE_MODULE}.py", (Path(__file__).parent / "hub_pipeline.py").read_text())
    atomic_write_text(path, json.dumps(index, indent=2) + "\n")
    return path
