"""Flow matching: the loss by hand, the sampler on a known straight path, stock diffusers' loading loop,
the command line's refusals, and a short run whose samples the evaluator recognises."""

from __future__ import annotations

import json

import pytest
import torch

from vaediff.families import load_run, train_run
from vaediff.models.unet import preset_config
from vaediff.objectives.flow import TIMESTEP_SCALE, flow_loss, flow_sample_loop, make_flow_scheduler

TINY = {"denoiser": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8},
        "sampling_steps": 3}


def test_loss_matches_a_hand_computation():
    config = preset_config("fast")
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 1, 4, 4, generator=generator), torch.randn(3, 1, 4, 4, generator=generator)
    t, labels = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([1, 2, 3])
    drop = torch.tensor([False, True, False])
    seen = {}

    def denoiser(x, timesteps, y):
        seen.update(x=x, t=timesteps, y=y)
        return 0.5 * x

    loss = flow_loss(denoiser, config, x0, labels, noise, t, drop)["loss"]
    x_t = torch.stack([(1 - t[i]) * x0[i] + t[i] * noise[i] for i in range(3)])
    expected = sum(float(((0.5 * x_t[i] - (noise[i] - x0[i])) ** 2).mean()) for i in range(3)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(seen["x"], x_t) and torch.allclose(seen["t"], t * 1000)
    assert seen["y"].tolist() == [1, config.null_label, 3]  # the dropped label becomes the null class


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_the_sampler_lands_on_the_one_data_point_along_the_exact_velocity(sampler):
    """Data that is one point x*: on the path x_t = (1 - t) x* + t eps the velocity is (x_t - x*) / t, so
    integrating it from noise must end at x* for any number of steps."""
    target = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)

    def exact_velocity(x, timesteps, labels):
        t = (timesteps / TIMESTEP_SCALE).view(-1, 1, 1, 1)
        return (x - target) / t

    for steps in (1, 2, 8):
        noise = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(steps))
        out = flow_sample_loop(exact_velocity, make_flow_scheduler(sampler, steps), noise, torch.zeros(5, dtype=torch.long),
                               1.0, None)
        assert torch.allclose(out, target.expand(5, -1, -1, -1), atol=1e-5), (sampler, steps)


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    return train_run("flow", tmp_path_factory.mktemp("flow") / "run", options={"model": TINY},
                     train_options={"max_steps": 4, "batch_size": 16}, progress=False)


def test_stock_diffusers_samples_the_run_with_the_readme_loop(flow_run):
    """README's loop: UNet2DModel and FlowMatchEulerDiscreteScheduler from the run directory, nothing else."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(flow_run.run_dir / "unet").eval()
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(flow_run.run_dir / "scheduler")
    scheduler.set_timesteps(sigmas=[1.0, 2 / 3, 1 / 3])  # three equal steps, then sigma 0
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 1, 28, 28, generator=generator), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = unet(x, t, class_labels=y).sample
            x = scheduler.step(v, t, x).prev_sample
    stock = ((x + 1) / 2).clamp(0, 1)
    ours = load_run(flow_run.run_dir).generate(4, y, torch.Generator().manual_seed(0), guidance=1.0)
    assert torch.allclose(stock, ours, atol=1e-5)


def test_sample_command_and_its_refusals(flow_run, cli, tmp_path):
    from conftest import assert_one_line_error

    code, _, err = cli("sample", flow_run.run_dir, "--out", tmp_path / "a.png", "--sampler", "heun", "--steps", "2")
    assert code == 0, err
    code, _, err = cli("sample", flow_run.run_dir, "--out", tmp_path / "b.png", "--sampler", "dpm")
    assert_one_line_error(code, err, "choose euler, heun")
    assert not (tmp_path / "b.png").exists()
    config = json.loads((flow_run.run_dir / "config.json").read_text())
    assert config["model_type"] == "flow" and config["model"]["sampler"] == "euler"


@pytest.mark.slow
def test_a_short_run_on_mnist_5k_draws_recognisable_digits(tmp_path, evaluator_cache, mnist5k):
    """200 optimizer steps of 32 images (under a CPU-minute) of the fast preset's network with the flow
    objective: the evaluator names the intended class of most samples (a loose bar: chance is 0.1; 0.80 here).
    Fixed in steps, not minutes, so a slow host does the same work."""
    from vaediff.evaluate import quality_metrics
    from vaediff.evaluator_network import load_or_train_evaluator
    from vaediff.generation import draw

    run = train_run("flow", tmp_path / "run", train_options={"max_steps": 200, "batch_size": 32}, progress=False,
                    figures=False)
    images, labels = draw(run, 200, seed=0)
    evaluator = load_or_train_evaluator(mnist5k, progress=False)
    accuracy = quality_metrics(evaluator, images, labels, mnist5k, intervals=False)["class_accuracy"]
    assert accuracy > 0.5, accuracy
