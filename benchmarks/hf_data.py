"""Issue 37: a Hugging Face `datasets` source as fast as the other readers.

    uv run python -m benchmarks.hf_data      # about 30 s on a 2-core CPU; needs Fashion-MNIST's IDX files

Fashion-MNIST's 70,000 images (Debian's dataset-fashion-mnist, or --data-dir) are written as a `datasets`
DatasetDict with save_to_disk and as one parquet file; then `load_dataset` reads each, timed, against the
IDX reader on the same images. Writes benchmarks/results/<date>-<host>-hf-data.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import socket
import tempfile
import time
from pathlib import Path

from benchmarks.harness import commit, cpu_description, log, write_results


def _timed(load) -> tuple[float, object]:
    started = time.perf_counter()
    data = load()
    return time.perf_counter() - started, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="where Fashion-MNIST's IDX files are (default: Debian's package)")
    args = parser.parse_args()
    import datasets
    from PIL import Image

    from vaediff.data import load_dataset

    datasets.disable_progress_bars()
    idx_s, idx = _timed(lambda: load_dataset("fashion-mnist", args.data_dir, download=False))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(idx.class_names))})

    def table(split):
        return datasets.Dataset.from_dict({"image": [Image.fromarray(a[0].numpy()) for a in split.images],
                                           "label": split.labels.tolist()}, features=features)

    with tempfile.TemporaryDirectory() as scratch:
        log("writing Fashion-MNIST as a save_to_disk folder and a parquet file")
        dataset_dict = datasets.DatasetDict(train=table(idx.train), test=table(idx.test))
        dataset_dict.save_to_disk(Path(scratch) / "saved")
        datasets.concatenate_datasets([dataset_dict["train"], dataset_dict["test"]]).to_parquet(Path(scratch) / "all.parquet")
        saved_s, saved = _timed(lambda: load_dataset(str(Path(scratch) / "saved")))
        parquet_s, parquet = _timed(lambda: load_dataset(str(Path(scratch) / "all.parquet")))
    same = bool((saved.train.images == idx.train.images).all() and (saved.test.labels == idx.test.labels).all())
    images = len(idx.train) + len(idx.test)
    results = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(), "cpu": cpu_description(),
               "commit": commit(), "images": images, "idx_s": round(idx_s, 2), "saved_s": round(saved_s, 2),
               "parquet_s": round(parquet_s, 2), "saved_images_per_s": round(images / saved_s),
               "parquet_images_per_s": round(images / parquet_s), "saved_equals_idx": same,
               "parquet_split": [len(parquet.train), len(parquet.test)],
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    rows = "\n".join(f"| {name} | {seconds:.2f} s | {images / seconds:,.0f} |"
                     for name, seconds in (("IDX files", idx_s), ("save_to_disk folder", saved_s),
                                           ("parquet file", parquet_s)))
    text = (f"# `datasets` sources: Fashion-MNIST's {images:,} images\n\nCPU: {results['cpu']}\n\n"
            f"| source | load_dataset | images/s |\n|---|---|---|\n{rows}\n\nsave_to_disk gives the IDX tensors "
            f"bit for bit: {same}. Peak memory of the process: {results['peak_rss_mb']} MB.\n")
    write_results(results, "hf-data", text)


if __name__ == "__main__":
    main()
