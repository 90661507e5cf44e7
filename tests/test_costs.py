"""`evaluate` and `compare` say up front what they will compute and about how long it takes on this host,
and `--minutes` sizes their work to fit or refuses in one line, writing nothing."""

import json

import pytest
from conftest import assert_one_line_error

from vaediff.costs import ModelSpeed, evaluation_seconds, samples_within
from vaediff.errors import ConfigError
from vaediff.evaluate import evaluate_run
from vaediff.families import train_run

TINY_UNET = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8, "sampling_steps": 3}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, evaluator_cache):
    run = tmp_path_factory.mktemp("costs") / "diffusion"
    train_run("diffusion", run, options={"model": TINY_UNET}, train_options={"max_steps": 3, "eval_images": 32},
              progress=False, figures=False)
    evaluate_run(run, n_samples=20, likelihood={"test_images": 4, "bound_timesteps": 4}, progress=False)
    return run


def test_samples_within_is_the_largest_count_that_fits():
    speed = ModelSpeed(sample_s=0.1, sampler_steps=20, guided=True, conditional=True, likelihood_s=5.0,
                       likelihood_images=100)
    count = samples_within(1.0, 2.0, speed, 0.001, 10_000, 20, "an evaluation")
    assert evaluation_seconds(speed, count, 0.001, 100) <= 58 < evaluation_seconds(speed, count + 1, 0.001, 100)
    assert samples_within(100.0, 0.0, speed, 0.001, 300, 20, "an evaluation") == 300  # never above what was asked
    with pytest.raises(ConfigError, match=r"--minutes 0.05 cannot hold an evaluation on this host: 20 samples .*"
                                          r"give --minutes [\d.]+ or more"):
        samples_within(0.05, 0.0, speed, 0.001, 10_000, 20, "an evaluation")


def test_evaluate_says_what_it_computes_and_fits_minutes(cli, tiny_run, tmp_path):
    code, out, err = cli("evaluate", tiny_run, "--n-samples", "20", "--likelihood-images", "4",
                         "--bound-timesteps", "4", "--out", tmp_path / "said")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("evaluating"))
    assert "20 samples (sampler dpm, steps 3" in line and "CAS" in line and "4 test images" in line and "about" in line

    code, out, err = cli("evaluate", tiny_run, "--minutes", "0.001", "--out", tmp_path / "refused")
    assert_one_line_error(code, err, "--minutes 0.001 cannot hold an evaluation", "give --minutes")
    assert not (tmp_path / "refused").exists()  # a refused command writes nothing

    code, out, err = cli("evaluate", tiny_run, "--minutes", "30", "--n-samples", "24", "--likelihood-images", "4",
                         "--bound-timesteps", "4", "--out", tmp_path / "fits")
    assert code == 0, err
    assert json.loads((tmp_path / "fits" / "metrics.json").read_text())["num_samples"] == 24


def test_compare_says_what_its_curves_cost_and_leaves_them_out_when_they_do_not_fit(cli, tiny_run, tmp_path):
    code, out, err = cli("compare", tiny_run, "--out", tmp_path / "report", "--minutes", "0.0001")
    assert code == 0, err
    assert "curves: --minutes 0.0001 holds none" in out and "the report leaves them out" in out
    assert (tmp_path / "report" / "report.md").is_file() and not (tmp_path / "report" / "steps.png").exists()
