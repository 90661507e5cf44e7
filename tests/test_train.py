"""The training loop's arithmetic: the learning-rate schedule, the horizon a --minutes budget plans, and
gradient accumulation, which must change memory use, not the result."""

import math

import pytest
import torch

from vaediff.families.vae import save_weights
from vaediff.models.vae import VAE, VAEConfig
from vaediff.objectives.vae import VAEObjective
from vaediff.runs import load_safetensors
from vaediff.training import TrainConfig, WarmupCosine, train

CONFIG = VAEConfig(hidden=32, latent=4)


def test_warmup_then_cosine_schedule_values():
    schedule = WarmupCosine(warmup=10, cosine=True, total=110)
    assert schedule(0) == pytest.approx(0.1) and schedule(4) == pytest.approx(0.5)  # linear warm-up
    assert schedule(9) == pytest.approx(1.0) and schedule(10) == pytest.approx(1.0)  # the peak
    assert schedule(60) == pytest.approx(0.5)  # half-way through the decay: (1 + cos(pi/2)) / 2
    assert schedule(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert schedule(110) == pytest.approx(0.0, abs=1e-12) and schedule(500) == pytest.approx(0.0, abs=1e-12)
    assert WarmupCosine(warmup=0, cosine=False)(1000) == 1.0  # constant
    assert WarmupCosine(warmup=5, cosine=True, total=None)(50) == 1.0  # no horizon yet: no decay


def test_a_minutes_budget_plans_a_horizon_that_fits_it(tiny, tmp_path):
    config = TrainConfig(minutes=0.1, batch_size=32, lr_schedule="cosine", eval_images=64, checkpoint_every=10_000)
    state = train(VAEObjective(CONFIG), lambda: VAE(CONFIG), tiny, config, tmp_path, export=save_weights, progress=False)
    # the plan is made from the speed of 15 steps after 5 warm-up steps, for 95% of the budget: at least the
    # 20 steps already taken, however slow the host (the number itself is the host's)
    assert state.planned_steps is not None and state.planned_steps >= 20
    assert state.step <= state.planned_steps  # ended by the plan, or by the clock a little before it
    assert state.elapsed_s < 0.1 * 60 * 1.5 + 10  # a tolerance that a slow or busy host passes
    assert state.limits == {"epochs": None, "minutes": 0.1, "max_steps": None}


def test_grad_accum_2_gives_the_weights_of_one_step_on_the_full_batch(tiny, tmp_path):
    for accum in (1, 2):
        config = TrainConfig(max_steps=3, batch_size=32, grad_accum=accum, eval_images=64)
        train(VAEObjective(CONFIG), lambda: VAE(CONFIG), tiny, config, tmp_path / f"accum{accum}", export=save_weights, progress=False)
    whole = load_safetensors(tmp_path / "accum1" / "model.safetensors")
    halves = load_safetensors(tmp_path / "accum2" / "model.safetensors")
    torch.manual_seed(0)  # what the loop does before it builds the model (seed 0)
    initial = VAE(CONFIG).state_dict()
    for name in whole:
        assert not torch.equal(whole[name], initial[name])  # training moved it
        # two partial sums instead of one: rounding-level differences, which Adam's first steps can scale
        # up to a small fraction of a step where a gradient is near epsilon
        difference = (whole[name] - halves[name]).abs()
        assert difference.max() < 1e-4, name
        assert difference.mean() < 1e-6, name
