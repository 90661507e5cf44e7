"""Issue 37: how long Inception-v3 features take here, so that README can say what an Inception FID costs.

    uv run python -m benchmarks.inception      # about a minute on a 2-core CPU; no weights needed

The speed of a network does not depend on its weights: torch-fidelity's Inception-v3 is built with random
weights (the published file cannot be downloaded here) and times 32x32 RGB images (CIFAR-10's) and 28x28
grey ones through vaediff.inception.inception_features, resize to 299x299 included. From the rate it prints
what CIFAR-10's train-against-test FID (60,000 images) and a 10,000-sample evaluation would take.
Writes benchmarks/results/<date>-<host>-inception.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from benchmarks.harness import commit, cpu_description, log, write_results


def random_weights_file(directory: Path) -> Path:
    """A state dict of torch-fidelity's Inception-v3 with random weights: the published file's layout."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    with mock.patch.object(fidelity, "load_state_dict_from_url", return_value=None), \
            mock.patch.object(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None):
        net = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = directory / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images timed per kind (default: 200)")
    args = parser.parse_args()
    from vaediff.inception import inception_features, load_inception

    with tempfile.TemporaryDirectory() as scratch:
        network = load_inception(random_weights_file(Path(scratch)))
    rates = {}
    for name, shape in (("cifar10_rgb_32", (3, 32, 32)), ("mnist_grey_28", (1, 28, 28))):
        images = torch.rand(args.images, *shape, generator=torch.Generator().manual_seed(0))
        inception_features(network, images[:10])  # warm-up
        log(f"timing {args.images} images of {name}")
        started = time.perf_counter()
        inception_features(network, images)
        rates[name] = args.images / (time.perf_counter() - started)
    per_s = rates["cifar10_rgb_32"]
    results = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(), "cpu": cpu_description(),
               "commit": commit(), "threads": torch.get_num_threads(), "images_timed": args.images,
               "images_per_s": {k: round(v, 2) for k, v in rates.items()},
               "cifar10_train_vs_test_minutes": round(60000 / per_s / 60, 1),
               "evaluation_10000_samples_minutes": round(20000 / per_s / 60, 1)}
    text = (f"# Inception-v3 features on this host\n\nCPU: {results['cpu']}, {results['threads']} threads\n\n"
            f"| images | images/s |\n|---|---|\n"
            + "".join(f"| {k} | {v:.1f} |\n" for k, v in rates.items())
            + f"\nCIFAR-10 train against test (60,000 images, features cached afterwards): about "
              f"{results['cifar10_train_vs_test_minutes']} min. An evaluation of 10,000 samples (their features and "
              f"as many test images'): about {results['evaluation_10000_samples_minutes']} min.\n")
    write_results(results, "inception", text)


if __name__ == "__main__":
    main()
