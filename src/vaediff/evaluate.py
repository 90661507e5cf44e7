"""Evaluation of trained runs, the same way for every model: sample quality in the evaluator's feature
space, class accuracy, memorisation, speed, and likelihood bounds for VAEs. Writes RUN/metrics.json.

Every number comes with its reference point: the same metrics computed for held-out real test images
(`reference`), so "fid 12" can be read against "fid_real 2".
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import torch

from vaediff import __version__
from vaediff import metrics as m
from vaediff.cas import classification_accuracy_score, real_data_score
from vaediff.checks import (
    MAX_IW_SAMPLES,
    MIN_EVAL_SAMPLES,
    check_apart,
    check_count,
    check_fits_in_memory,
    check_sample_count,
    data_source_inputs,
    output_directory,
    writable_directory,
    written_kind,
)
from vaediff.costs import (
    evaluation_seconds,
    evaluator_image_seconds,
    measure_run,
    minutes_text,
    samples_within,
)
from vaediff.data import Dataset, ImageSplit
from vaediff.devices import describe
from vaediff.errors import ConfigError, DataError, RunError
from vaediff.evaluator_network import Evaluator, default_cache_dir, load_or_train_evaluator
from vaediff.families import check_command, family_of, load_run, run_dataset
from vaediff.families.base import LikelihoodSettings
from vaediff.figures import plot_confusion
from vaediff.generation import choose_sampling_precision, timed_draw
from vaediff.inception import (
    FEATURE_SPACE,
    FID_RESAMPLES,
    InceptionNetwork,
    cached_features,
    check_features,
    distances,
    feature_cache_path,
    image_seconds,
    inception_features,
    load_inception,
)
from vaediff.intervals import enclosing, quality_intervals, real_kernel_mean
from vaediff.intervals import method as interval_method
from vaediff.model_card import write_model_card
from vaediff.runs import atomic_write_json

NEIGHBOURS = 5  # k of density and coverage (Naeem et al. 2020), the largest k of the neighbourhood metrics
REFERENCE_SIZE = 10000  # real training images every FID is measured against (at most)
# what metrics.json says of every FID it holds: the space its features come from
EVALUATOR_SPACE = "vaediff evaluator CNN (128-d features of a classifier trained on this data set)"


def _reference_subset(split: ImageSplit, size: int, seed: int) -> torch.Tensor:
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:size]
    return split.as_float(index)


# What quality_metrics computes from real images alone (reference features, test-to-train distances) is
# the same for every model and every point of the report's curves: computed once per evaluator and data.
# Keyed by content, not identity, so that every `evaluate_run` in one process (a study's five, a notebook's,
# a test session's), each of which loads the evaluator and the data afresh, shares it.
_REAL_CACHE: dict[tuple, Any] = {}


def _content_key(evaluator: Evaluator, dataset: Dataset) -> str:
    digest = hashlib.sha1(repr(evaluator.feature_scale).encode())
    for tensor in (*evaluator.net.state_dict().values(), dataset.train.images, dataset.test.images):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cached(key: tuple, content: str, compute) -> Any:
    key = (*key, content)
    if key not in _REAL_CACHE:
        if len(_REAL_CACHE) > 8:
            _REAL_CACHE.clear()
        _REAL_CACHE[key] = compute()
    return _REAL_CACHE[key]


def quality_metrics(evaluator: Evaluator, samples: torch.Tensor, labels: torch.Tensor | None, dataset: Dataset,
                    seed: int = 0, reference_size: int = REFERENCE_SIZE, intervals: bool = True) -> dict:
    """Every sample-quality number for `samples` (N, C, S, S) in [0, 1], and (`intervals`) under "ci95"
    their 95% intervals from a bootstrap over the samples (intervals.py). The Inception-score analogue
    needs class probabilities, so an unlabelled set (whose evaluator predicts rotations) has none.

    The real reference is a fixed subset of the training split (up to `reference_size` images): FID and
    KID against all of it, precision/recall/density/coverage against as many real images as samples
    (the papers' protocol). `labels` are the classes the samples were drawn for, if any.
    """
    reference_count = min(len(dataset.train), reference_size)
    content = _content_key(evaluator, dataset)  # hashed once: three cached values depend on it
    real_features = _cached(("features", seed, reference_count), content, lambda: (
        evaluator.features_and_probabilities(_reference_subset(dataset.train, reference_count, seed))[0]))
    features, probabilities = evaluator.features_and_probabilities(samples)
    matched = real_features[: min(len(real_features), len(features))]
    kid_mean, kid_std = m.kernel_distance(real_features, features, seed=seed)
    precision, recall = m.precision_recall(matched, features, k=3)
    density, coverage = m.density_coverage(matched, features, k=NEIGHBOURS)
    inception, inception_std = m.inception_score(probabilities, seed=seed)
    result = {
        "fid": m.frechet_distance(real_features, features),
        "kid": {"mean": kid_mean, "std": kid_std},
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
        "is": inception,
        "is_std": inception_std,
        "num_samples": len(samples),
        "reference_images": reference_count,
    }
    predicted = probabilities.argmax(dim=1)
    if labels is not None:
        result["class_accuracy"] = float((predicted == labels).float().mean())
        result["confusion"] = m.confusion_matrix(labels, predicted, dataset.num_classes).tolist()
    if intervals:
        real_term = _cached(("kid_real_term", seed, reference_count), content,
                            lambda: real_kernel_mean(real_features))
        intervals = quality_intervals(real_features, matched, features, probabilities, labels, seed,
                                      real_term=real_term)
        result["ci95"] = {name: enclosing(interval, _estimate(result, name)) for name, interval in intervals.items()}
        result["ci95_method"] = interval_method()
    if not dataset.labelled:
        for table in (result, result.get("ci95", {})):
            table.pop("is", None), table.pop("is_std", None)
    else:
        shares = torch.bincount(predicted, minlength=dataset.num_classes).float() / len(predicted)
        result["predicted_class_share"] = shares.tolist()
    test_distances = _cached(("test_distances",), content,
                             lambda: m.nearest_distances(dataset.test.images, dataset.train.images))
    detail = m.memorisation(samples, dataset.train.images, test_distances=test_distances)
    result["memorisation"] = detail["share_closer_than_test_p05"]
    result["memorisation_detail"] = detail
    return result


def _estimate(result: dict, name: str) -> float:
    value = result[name]
    return value["mean"] if isinstance(value, dict) else value


def _test_subset(dataset: Dataset, size: int, seed: int) -> torch.Tensor:
    """The held-out test images the real reference scores (as many as samples, at most the split)."""
    count = min(size, len(dataset.test))
    return torch.randperm(len(dataset.test), generator=torch.Generator().manual_seed(seed + 1))[:count]


def _inception_reference(dataset: Dataset, seed: int, reference_size: int = REFERENCE_SIZE) -> torch.Tensor:
    """The real training images (uint8) Inception FID is measured against: the evaluator's reference subset."""
    count = min(len(dataset.train), reference_size)
    return dataset.train.images[torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:count]]


def inception_metrics(network: InceptionNetwork, samples: torch.Tensor, dataset: Dataset, seed: int = 0,
                      cache_dir=None, progress: bool = False, reference_size: int = REFERENCE_SIZE) -> dict:
    """FID and KID of `samples` in Inception-v3 features (inception.py) against the same real reference as
    the evaluator's FID (a fixed subset of the training split), and for held-out test images as many as
    samples (`inception_fid_real`, the floor), each under its own key: never ranked against the evaluator's."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    reference = _inception_reference(dataset, seed, reference_size)
    reference_count = len(reference)
    real = cached_features(network, reference, cache, progress,
                           f"Inception features of {reference_count} real training images (cached)")
    fake = inception_features(network, samples, progress=progress, desc="Inception features of the samples")
    scores = distances(real, fake, seed)
    test = cached_features(network, dataset.test.images[_test_subset(dataset, len(samples), seed)], cache, progress,
                           "Inception features of real test images (cached)")
    return {"inception_fid": scores["fid"], "inception_kid": scores["kid"],
            "inception_fid_real": distances(real, test, seed, intervals=False)["fid"],
            "inception": {**network.describe(), "reference_images": reference_count, "real_test_images": len(test)},
            "ci95": {"inception_fid": scores["ci95"]["fid"], "inception_kid": scores["ci95"]["kid"]}}


def real_fid(dataset: Dataset, features: str = "evaluator", inception_weights=None, train_images: int | None = None,
             test_images: int | None = None, seed: int = 0, cache_dir=None, progress: bool = True) -> dict:
    """FID and KID (with 95% bootstrap intervals over the test images) between a data set's training images
    (the first `train_images` of a seeded shuffle; default all) and its test images (likewise): the floor
    of every model's FID on these data, and with Inception features a figure papers print (CIFAR-10)."""
    check_features(features, inception_weights)
    train_index = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:train_images]
    test_index = torch.randperm(len(dataset.test), generator=torch.Generator().manual_seed(seed + 1))[:test_images]
    if len(test_index) < 2 or len(train_index) < 2:
        raise DataError(f"{dataset.name}: FID needs at least 2 training and 2 test images, got {len(train_index)} "
                        f"and {len(test_index)}")
    if features == "inception":
        network, cache = load_inception(inception_weights), Path(cache_dir) if cache_dir else default_cache_dir()
        real = cached_features(network, dataset.train.images[train_index], cache, progress,
                               f"Inception features of {len(train_index)} training images (cached)")
        test = cached_features(network, dataset.test.images[test_index], cache, progress,
                               f"Inception features of {len(test_index)} test images (cached)")
        space = network.describe()
    else:
        evaluator = load_or_train_evaluator(dataset, cache_dir, progress=progress)
        real = evaluator.features_and_probabilities(dataset.train.as_float(train_index))[0]
        test = evaluator.features_and_probabilities(dataset.test.as_float(test_index))[0]
        space = {"feature_space": EVALUATOR_SPACE, "evaluator_accuracy": evaluator.accuracy}
    return {"dataset": dataset.name, "train_images": len(train_index), "test_images": len(test_index), "seed": seed,
            **distances(real, test, seed), **space}


def real_reference(evaluator: Evaluator, dataset: Dataset, size: int, seed: int = 0) -> dict:
    """The same metrics for held-out real test images: the floor (or ceiling) a perfect model reaches.

    The memorisation share is omitted: for test images it is the quantile itself (0.05) by definition.
    """
    index = _test_subset(dataset, size, seed)
    images, labels = dataset.test.as_float(index), dataset.test.labels[index] if dataset.labelled else None
    reference = quality_metrics(evaluator, images, labels, dataset, seed, intervals=False)
    for key in ("memorisation", "memorisation_detail", "confusion"):
        reference.pop(key, None)
    return reference


def device_description(device: torch.device) -> dict:
    """The device that measured samples_per_second (the run's), beside the number."""
    return {"device": describe(device), "threads": torch.get_num_threads()}


MAX_LIKELIHOOD_COUNTS = {"iw_samples": MAX_IW_SAMPLES, "test_images": 100_000, "bound_timesteps": 2000,
                         "ode_steps": 1000}


def evaluate_run(run_dir, n_samples: int = 10000, iw_samples: int | None = None, binarize: bool | None = None,
                 seed: int = 0, cache_dir=None, sampler_options: dict | None = None,
                 progress: bool = True, write: bool = True, likelihood: dict | None = None,
                 ignore_unused: bool = False, out_dir=None, minutes: float | None = None,
                 announce: bool | None = None, features: str = "evaluator", inception_weights=None, precision="fp32") -> dict:
    """Measure a run and write RUN/metrics.json (and RUN/confusion.png for conditional runs), or into
    `out_dir` (a read-only run's metrics go elsewhere; the check is made before any work).
    `likelihood` overrides fields of families.LikelihoodSettings (test_images, bound_timesteps, ode_steps);
    one the run does not read is refused, as `sample` refuses sampler options a run has none of, unless
    `ignore_unused` (one set of settings for runs of several families, as the quickstart gives).

    With `announce` (default: `progress`), it first says what it will compute and about how long that takes
    here (timed on a few samples and test images); `minutes` draws as many samples as fit in that time (at most `n_samples`),
    or refuses in one line with the budget that holds. `features="inception"` adds FID and KID in
    Inception-v3 features from the weights file `inception_weights` (inception.py), beside the evaluator's.
    `precision`: the samples' (choose_sampling_precision); the evaluator and Inception compute in fp32."""
    check_sample_count(n_samples, "--n-samples")
    check_features(features, inception_weights)
    inception = load_inception(inception_weights) if features == "inception" else None  # a bad file: first
    given = {k: v for k, v in {**(likelihood or {}), "iw_samples": iw_samples, "binarize": binarize}.items()
             if v is not None}
    likelihood_settings = likelihood_settings_of(given)
    run = load_run(run_dir)
    check_command(run.model_type, "evaluate")
    if not ignore_unused:
        check_likelihood_options(run, given)
    target = metrics_directory(run, out_dir) if write else None
    settings = run.config["settings"]
    dataset = run_dataset(run.config, str(run_dir))
    if len(dataset.test) <= NEIGHBOURS:  # before minutes of sampling, not after
        raise DataError(f"{run_dir} was trained on data whose test split has {len(dataset.test)} images; the "
                        f"real reference needs at least {NEIGHBOURS + 1} (density and coverage compare "
                        f"{NEIGHBOURS} nearest neighbours)")
    sampler_options = run.sampler_settings(**(sampler_options or {}))
    sampling_precision = choose_sampling_precision(run, precision, cache_dir)
    # the samples, their features and the real reference's are held at once (float32)
    check_fits_in_memory(n_samples, 4 * (3 * dataset.train.images[0].numel() + 2 * 256), "--n-samples")
    evaluator = load_or_train_evaluator(dataset, cache_dir, progress=progress)
    if binarize is None:  # as the run was trained
        likelihood_settings = dataclasses.replace(likelihood_settings, binarize=bool(settings.get("binarize")))
    announce = progress if announce is None else announce
    if announce or minutes is not None:
        n_samples = _announce(run, dataset, likelihood_settings, seed, sampler_options, n_samples, minutes, announce,
                              inception, cache_dir)
    samples, labels, seconds = timed_draw(run, n_samples, seed, sampler_options, progress)
    metrics: dict = {"vaediff_version": __version__, "run": str(run_dir), "model_type": run.model_type,
                     "dataset": dataset.name, "seed": seed, "evaluator_accuracy": evaluator.accuracy,
                     "training_precision": training_precision(run.config), "samples_per_second": n_samples / seconds,
                     "sampling_precision": sampling_precision.to_dict(),
                     **device_description(run.device), **({"sampler": sampler_options} if sampler_options else {})}
    metrics.update(quality_metrics(evaluator, samples, labels, dataset, seed))
    metrics["feature_spaces"] = {"fid": EVALUATOR_SPACE, "kid": EVALUATOR_SPACE}
    _add_references(metrics, run, evaluator, dataset, samples, labels, seed, cache_dir)
    if inception is not None:
        _add_inception(metrics, inception_metrics(inception, samples, dataset, seed, cache_dir, progress))
    add_likelihood(metrics, run.likelihood(dataset.test, likelihood_settings, seed, progress))
    if target is not None:
        _write_metrics(target, metrics, run, dataset)
    return metrics


def training_precision(config: dict) -> dict:
    """The precision the run trained in, as config.json says (what --precision auto chose, its ratio and why)."""
    stored = config.get("settings", {}).get("precision")
    if stored:
        return stored
    precision = config.get("train", {}).get("precision") or {"no": "fp32"}.get(
        config.get("train", {}).get("mixed_precision", "no"), config.get("train", {}).get("mixed_precision"))
    return {"asked": precision, "chosen": precision, "ratio": None, "why": "as asked"}


def _write_metrics(target: Path, metrics: dict, run, dataset: Dataset) -> None:
    """metrics.json, confusion.png (class-conditional runs) and the run's model card with these numbers."""
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target / "metrics.json", metrics)
    if "confusion" in metrics:
        plot_confusion(metrics["confusion"], dataset.class_names, target / "confusion.png",
                       f"{run.model_type}: evaluator's class for samples drawn per class")
    write_model_card(run, family_of(run.model_type).summary.get("en", ""), metrics, out_dir=target)


def _add_inception(metrics: dict, scores: dict) -> None:
    intervals = scores.pop("ci95")
    metrics.update(scores)
    metrics["ci95"].update(intervals)
    metrics["feature_spaces"].update({"inception_fid": FEATURE_SPACE, "inception_kid": FEATURE_SPACE})
    metrics["ci95_method"]["inception_fid"] = (f"percentile bootstrap over the generated samples, {FID_RESAMPLES} "
                                               "resamples (a 2048-d eigensolve each), centred on the estimate")


def _add_references(metrics: dict, run, evaluator: Evaluator, dataset: Dataset, samples: torch.Tensor,
                    labels: torch.Tensor | None, seed: int, cache_dir) -> None:
    """What the numbers are read against: CAS and its real-data ceiling (class-conditional runs), the same
    metrics for held-out real images, and for latent models their autoencoder's reconstructions."""
    n_samples = len(samples)
    if labels is not None:  # class-conditional: the Classification Accuracy Score and its real-data ceiling
        score = classification_accuracy_score(samples, labels, dataset, seed)
        metrics["cas"], metrics["ci95"]["cas"] = score["cas"], score["ci95"]
        metrics["cas_real"] = real_data_score(dataset, n_samples, seed, cache_dir)["cas"]
        metrics["ci95_method"]["cas"] = "bootstrap over the real test images (the classifier is trained once)"
    reference = real_reference(evaluator, dataset, n_samples, seed)
    metrics["fid_real"] = reference["fid"]
    metrics["reference"] = reference
    count = min(n_samples, len(dataset.test))
    reconstructions = run.reconstruct(dataset.test.as_float(slice(0, count)))
    if reconstructions is not None:  # latent diffusion: its autoencoder bounds the quality it can reach
        recon = quality_metrics(evaluator, reconstructions, dataset.test.labels[:count] if dataset.labelled else None,
                                dataset, seed, intervals=False)
        metrics["autoencoder_fid"] = recon["fid"]
        metrics["autoencoder_reconstruction"] = {k: recon[k] for k in ("fid", "kid", "precision", "recall",
                                                                       "class_accuracy") if k in recon}


def _announce(run, dataset: Dataset, likelihood: LikelihoodSettings, seed: int, sampler_options: dict,
              n_samples: int, minutes: float | None, progress: bool, inception: InceptionNetwork | None = None,
              cache_dir=None) -> int:
    """Time this run on a few samples and test images; with `minutes`, the most samples that fit; say what
    will be computed and about how long it takes. Returns the sample count."""
    started = time.perf_counter()
    speed = measure_run(run, dataset, likelihood, seed, sampler_options)
    image_s = evaluator_image_seconds(dataset)
    inception_s, reference_s = _inception_cost(inception, dataset, seed, cache_dir)
    if minutes is not None:
        n_samples = samples_within(minutes, time.perf_counter() - started + reference_s, speed, image_s, n_samples,
                                   MIN_EVAL_SAMPLES, f"an evaluation of {run.run_dir}", inception_s)
    if progress:
        sampler = ", ".join(f"{k} {v}" for k, v in sampler_options.items()) if sampler_options else "its decoder"
        parts = [f"{n_samples} samples ({sampler})", "quality metrics with 95% intervals"]
        if run.conditional:
            parts.append("CAS")
        parts.append(f"likelihood on {speed.likelihood_images} test images")
        if inception is not None:
            parts.append("Inception-v3 FID and KID" + (" (the real reference's features first)" if reference_s else ""))
        seconds = evaluation_seconds(speed, n_samples, image_s, speed.likelihood_images, inception_s) + reference_s
        print(f"evaluating {run.run_dir}: {', '.join(parts)}: about {minutes_text(seconds)} on this host"
              + (f" (--minutes {minutes:g})" if minutes is not None else ""), flush=True)
    return n_samples


def _inception_cost(inception: InceptionNetwork | None, dataset: Dataset, seed: int, cache_dir) -> tuple[float, float]:
    """(seconds an image takes through Inception here, seconds of the real reference's features when they
    are not cached yet); (0, 0) without Inception."""
    if inception is None:
        return 0.0, 0.0
    reference = _inception_reference(dataset, seed)
    per_image = image_seconds(inception, dataset.train.images[:10])
    cached = feature_cache_path(inception, reference, Path(cache_dir) if cache_dir else default_cache_dir()).is_file()
    return per_image, 0.0 if cached else per_image * len(reference)


def metrics_directory(run, out_dir) -> Path:
    """Where metrics.json goes: `out_dir` (made if missing; not another vaediff directory, nor inside one,
    the run or its data set), else the run, which must then be writable: one line naming the option that
    writes elsewhere, not an error after minutes of sampling."""
    run_dir = run.run_dir
    if out_dir is not None:
        directory = output_directory(out_dir)
        if written_kind(directory) is not None:
            raise RunError(f"--out {out_dir} is a vaediff '{written_kind(directory)}' directory; its metrics.json "
                           f"would pass for its own: choose another --out")
        check_apart(directory, [("run", run_dir), *data_source_inputs(run.config["settings"]["dataset"])])
        return directory  # made when metrics.json is written: a refused or failed evaluation writes nothing
    problem = writable_directory(Path(run_dir))
    if problem:
        raise RunError(f"{problem}; pass --out DIR to write metrics.json elsewhere")
    return Path(run_dir)


LIKELIHOOD_FLAGS = {"iw_samples": "--iw-samples", "binarize": "--binarize", "test_images": "--likelihood-images",
                    "bound_timesteps": "--bound-timesteps", "ode_steps": "--ode-steps"}


def likelihood_settings_of(given: dict) -> LikelihoodSettings:
    """LikelihoodSettings from the command's values (LikelihoodSettings' field names), each count checked
    (one line for a bad one); defaults for the rest."""
    unknown = sorted(set(given) - set(LIKELIHOOD_FLAGS))
    if unknown:
        raise ConfigError(f"unknown likelihood setting {unknown[0]!r}; choose from {', '.join(LIKELIHOOD_FLAGS)}")
    for key, value in given.items():
        if key != "binarize":  # the bound's Monte-Carlo interval needs two importance samples
            check_count(value, LIKELIHOOD_FLAGS[key], MAX_LIKELIHOOD_COUNTS[key], 2 if key == "iw_samples" else 1)
    return LikelihoodSettings(**given)


def check_likelihood_options(run, given: dict) -> None:
    """One line for a likelihood option the run does not use (`--ode-steps` on a VAE), not silence."""
    unused = [key for key in given if key not in run.likelihood_options]
    if unused:
        used = ", ".join(LIKELIHOOD_FLAGS[k] for k in run.likelihood_options)
        reads = f"its likelihood reads {used}" if used else "it has no likelihood estimate to tune"
        raise ConfigError(f"{LIKELIHOOD_FLAGS[unused[0]]} does not apply to this {run.model_type} run ({reads})")


def add_likelihood(metrics: dict, likelihood: dict | None) -> None:
    """The run's bits/dim (and VAEs' nats) into metrics.json: `bits_per_dim` with its interval in `ci95`,
    `likelihood_axis` ("8-bit", "binarized", or null with `no_bits_per_dim` saying why)."""
    if likelihood is None:
        return
    metrics["likelihood"] = likelihood
    metrics["likelihood_axis"] = likelihood.get("likelihood_axis")
    if "elbo_nats" in likelihood:  # VAEs: their bounds in nats, as before (on their own axis)
        metrics.update({k: likelihood[k] for k in ("elbo_nats", "nll_nats")})
    if likelihood.get("bits_per_dim") is not None:
        metrics["bits_per_dim"] = likelihood["bits_per_dim"]
    if likelihood.get("bits_per_dim") is None:
        metrics["no_bits_per_dim"] = likelihood.get("no_bits_per_dim")
        return
    metrics.setdefault("ci95", {})["bits_per_dim"] = likelihood["ci95"]
    metrics.setdefault("ci95_method", {})["bits_per_dim"] = (
        f"normal interval over {likelihood['test_images']} test images (the Monte-Carlo error of the estimate "
        f"alone: likelihood.estimate_ci95)")


TABLE_KEYS = ("fid", "fid_real", "autoencoder_fid", "kid", "inception_fid", "inception_fid_real", "inception_kid", "precision", "recall", "density", "coverage", "is", "class_accuracy",
              "cas", "cas_real",
              "memorisation", "evaluator_accuracy", "elbo_nats", "nll_nats", "bits_per_dim", "samples_per_second")


def format_metrics(metrics: dict) -> str:
    """A text table of the headline metrics: value, its 95% interval, and the real-data reference."""
    reference, intervals = metrics.get("reference", {}), metrics.get("ci95", {})
    lines = [f"{metrics.get('model_type', '?')} run {metrics.get('run', '')} on {metrics.get('dataset', '')}"
             f" ({metrics.get('num_samples', 0)} samples)",
             f"  {'metric':<20} {'model':>12} {'95% interval':>21} {'real data':>12}"]
    for key in TABLE_KEYS:
        if key not in metrics:
            continue
        value, ref = metrics[key], reference.get(key)
        if isinstance(value, dict):
            value, ref = value["mean"], (ref or {}).get("mean") if isinstance(ref, dict) else None
        low_high = intervals.get(key)
        interval_text = f"[{low_high[0]:.4g}, {low_high[1]:.4g}]" if low_high else ""
        ref_text = f"{ref:>12.4g}" if isinstance(ref, int | float) else f"{'':>12}"
        lines.append(f"  {key:<20} {value:>12.4g} {interval_text:>21} {ref_text}")
    for key, space in metrics.get("feature_spaces", {}).items():
        if key in ("fid", "inception_fid"):
            lines.append(f"  {key} is measured in {space}")
    if metrics.get("inception", {}).get("published_weights") is False:
        lines.append(f"  {metrics['inception']['weights']} is not the published file (sha256 "
                     f"{metrics['inception']['weights_sha256'][:8]}...): its FID is not comparable with papers'")
    if metrics.get("likelihood_axis"):
        lines.append(f"  bits_per_dim is on {metrics['likelihood_axis']} images: "
                     f"{metrics['likelihood'].get('method', '')}")
    elif metrics.get("no_bits_per_dim"):
        lines.append(f"  no bits_per_dim: {metrics['no_bits_per_dim']}")
    return "\n".join(lines)
