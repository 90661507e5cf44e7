"""Execute notebooks/example.ipynb on tiny runs, so the notebook never rots."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from vaediff.families import train_run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "example.ipynb"
TINY_LATENT = {"autoencoder": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4},
               "denoiser": {"block_out_channels": [16], "norm_num_groups": 4, "attention_head_dim": 8}}


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path, evaluator_cache):
    small = {"max_steps": 4, "batch_size": 32, "eval_images": 64}
    train_run("vae", tmp_path / "vae", train_options={"max_steps": 20}, progress=False)
    train_run("cvae", tmp_path / "cvae", train_options={"max_steps": 20}, progress=False)
    train_run("diffusion", tmp_path / "diffusion", progress=False, train_options=small,
              options={"model": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8,
                                 "sampling_steps": 4}})
    train_run("latent-diffusion", tmp_path / "latent-diffusion", progress=False, train_options=small,
              options={"model": {**TINY_LATENT, "denoiser": {**TINY_LATENT["denoiser"], "sampling_steps": 4}}})
    train_run("flow", tmp_path / "flow", progress=False, train_options=small,
              options={"model": {"denoiser": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4,
                                              "attention_head_dim": 8}, "sampling_steps": 4}})
    train_run("meanflow", tmp_path / "meanflow", progress=False, train_options={**small, "max_steps": 2},
              options={"init": str(tmp_path / "flow"), "model": {"sampling_steps": 2}}, figures=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["VAEDIFF_RUNS"] = str(tmp_path)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.pop("VAEDIFF_RUNS", None)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "latent-diffusion" in printed and "meanflow" in printed and "FID" in printed
    assert "no meanflow run" not in printed  # its cell drew the 1-, 2- and 4-step rows
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 5
