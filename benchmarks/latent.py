"""The suite's latent section: latent diffusion against the pixel fast preset, the same training budget."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import log
from benchmarks.quality import quality, train
from vaediff.data import Dataset


def latent(dataset: Dataset, minutes: float, samples: int, work: Path, fast_run=None) -> dict:
    """Latent diffusion within the same budget, against the pixel fast preset (trained here if needed)."""
    from vaediff.evaluate import quality_metrics
    from vaediff.evaluator_network import load_or_train_evaluator

    evaluator = load_or_train_evaluator(dataset, progress=False)
    log(f"training latent diffusion for {minutes} min")
    run = train("latent-diffusion", work / f"latent-{minutes:g}", dataset.name, minutes, {})
    options = run.sampler_settings()
    result = quality(run, evaluator, dataset, samples, options)
    recon = run.autoencoder.reconstruct(dataset.test.as_float(slice(0, samples)))
    recon_fid = quality_metrics(evaluator, recon, dataset.test.labels[:samples], dataset)["fid"]
    if fast_run is None:
        log(f"training diffusion fast for {minutes} min (the pixel-space reference)")
        fast_run = train("diffusion", work / f"fast-{minutes:g}", dataset.name, minutes, {"preset": "fast"})
    fast = quality(fast_run, evaluator, dataset, samples, fast_run.sampler_settings())
    # The latent preset's guidance (3, only at t/T in [0.1, 0.7]) on the pixel model too: is the gap the
    # guidance rule's, or the model's?
    latent_rule = {"guidance": options["guidance"], "guidance_interval": options["guidance_interval"]}
    fast_with_rule = quality(fast_run, evaluator, dataset, samples, fast_run.sampler_settings(**latent_rule))
    log(f"latent: accuracy {result['class_accuracy']:.3f}, FID {result['fid']:.2f}, "
        f"{result['images_per_second']:.1f} images/s; pixel fast FID {fast['fid']:.2f}")
    return {"latent": {**result, "minutes": minutes, "autoencoder_reconstruction_fid": round(recon_fid, 3),
                       "pixel_fast_same_budget": fast, "pixel_fast_with_latent_guidance": fast_with_rule},
            "latent_class_accuracy": result["class_accuracy"],
            "latent_vs_fast_fid_ratio": round(result["fid"] / fast["fid"], 4),
            "latent_images_per_second": result["images_per_second"]}


def latent_rows(latent: dict | None) -> list[tuple[str, dict]]:
    """The latent section's rows of the suite's Markdown table."""
    if not latent:
        return []
    keys = ("class_accuracy", "fid", "images_per_second", "guidance", "guidance_interval")
    pick = lambda row: {k: row[k] for k in keys if k in row}  # noqa: E731
    return [("latent diffusion (its defaults)", {**pick(latent), "reconstruction fid":
                                                 latent["autoencoder_reconstruction_fid"]}),
            ("pixel fast, same budget (its defaults)", pick(latent["pixel_fast_same_budget"])),
            ("pixel fast with the latent preset's guidance", pick(latent["pixel_fast_with_latent_guidance"]))]
