import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from vaediff.errors import Interrupted
from vaediff.families import load_run, train_run
from vaediff.families.vae import VAERun, save_weights
from vaediff.models.vae import VAE, VAEConfig
from vaediff.objectives.vae import (
    VAEObjective,
    elbo_and_iw_nll,
    gaussian_kl,
    log_importance_weights,
    negative_elbo,
)
from vaediff.runs import load_safetensors
from vaediff.training import CHECKPOINT_FILE, TrainConfig, train


def test_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=2, hidden=3, latent=2))
    images = torch.tensor([[[[0.0, 1.0], [0.25, 0.5]]]])
    noise = torch.tensor([[0.3, -1.2]])
    with torch.no_grad():
        terms = negative_elbo(model, images, None, noise)
    with torch.no_grad():
        x = images.reshape(1, 4).numpy().astype(np.float64)
        h = np.maximum(0, x @ model.encoder[0].weight.double().numpy().T + model.encoder[0].bias.double().numpy())
        mu = h @ model.fc_mu.weight.double().numpy().T + model.fc_mu.bias.double().numpy()
        logvar = h @ model.fc_logvar.weight.double().numpy().T + model.fc_logvar.bias.double().numpy()
        z = mu + np.exp(0.5 * logvar) * noise.double().numpy()
        d1, d2 = model.decoder[0], model.decoder[2]
        hidden = np.maximum(0, z @ d1.weight.double().numpy().T + d1.bias.double().numpy())
        p = 1 / (1 + np.exp(-(hidden @ d2.weight.double().numpy().T + d2.bias.double().numpy())))
    recon = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p))
    kl = 0.5 * np.sum(mu**2 + np.exp(logvar) - 1 - logvar)
    assert float(terms["recon"]) == pytest.approx(recon, rel=1e-5)
    assert float(terms["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(recon + kl, rel=1e-5)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    assert torch.equal(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))
    assert (gaussian_kl(torch.ones(3, 5) * 0.1, torch.zeros(3, 5)) > 0).all()


def test_importance_weighted_bound_is_below_the_elbo_and_tightens(tiny):
    torch.manual_seed(0)
    model = VAE(VAEConfig(hidden=64, latent=8))
    images = tiny.test.as_float(slice(0, 50))
    bounds = {}
    for k in (1, 10, 200):
        weights = log_importance_weights(model, images, None, k, torch.Generator().manual_seed(1))
        elbo, nll = elbo_and_iw_nll(weights)
        assert (nll <= elbo + 1e-4).all()
        bounds[k] = float(nll.mean())
    assert bounds[200] < bounds[10] < bounds[1]


def _train_config(**overrides):
    return TrainConfig(**{"max_steps": 60, "batch_size": 32, "lr": 1e-3, "checkpoint_every": 10,
                          "eval_images": 100, **overrides})


def test_short_training_lowers_the_test_loss(tiny, tmp_path):
    config = VAEConfig(hidden=128, latent=8)
    state = train(VAEObjective(config), lambda: VAE(config), tiny, _train_config(max_steps=200, batch_size=64), tmp_path,
                  progress=False)
    first, last = state.history[0]["test_loss"], state.history[-1]["test_loss"]
    assert last < first - 20
    assert (tmp_path / "loss.csv").read_text().count("\n") == len(state.history) + 1
    assert imread(tmp_path / "loss.png").shape[0] > 100


def test_save_load_round_trip_gives_identical_outputs(tiny, tmp_path):
    run = train_run("cvae", tmp_path / "run", options={"hidden": 64, "latent": 4},
                    train_options={"max_steps": 20}, progress=False)
    run_dir = run.run_dir
    assert load_run(run_dir).config == run.config  # what train_run returns is the run its directory holds
    assert isinstance(run, VAERun) and run.conditional
    # the weights as training left them, from the resume checkpoint (no EMA for VAEs): the exported,
    # reloaded model must compute exactly what they compute, and not what untrained weights compute
    checkpoint = load_safetensors(run_dir / CHECKPOINT_FILE)
    trained = VAE(run.model.config)
    trained.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint.items() if k.startswith("model.")})
    z, labels = torch.randn(5, 4), torch.arange(5)
    with torch.no_grad():
        assert torch.equal(trained.decode(z, labels), run.model.decode(z, labels))
        assert not torch.allclose(VAE(run.model.config).decode(z, labels), run.model.decode(z, labels))
    for name in ("samples.png", "reconstructions.png", "latent.png", "interpolation.png", "loss.png", "loss.csv"):
        assert (run_dir / name).is_file(), name


def test_interrupted_run_resumes_to_the_same_weights(tiny, tmp_path):
    config = VAEConfig(hidden=64, latent=4)
    train_config = _train_config()
    train(VAEObjective(config), lambda: VAE(config), tiny, train_config, tmp_path / "straight", export=save_weights, progress=False)

    class InterruptAtStep25(VAEObjective):
        calls = 0

        def losses(self, *args):
            InterruptAtStep25.calls += 1
            if InterruptAtStep25.calls == 25:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does
            return super().losses(*args)

    with pytest.raises(Interrupted) as info:
        train(InterruptAtStep25(config), lambda: VAE(config), tiny, train_config, tmp_path / "broken", export=save_weights, progress=False)
    assert info.value.exit_code == 130 and "--resume" in str(info.value)
    train(VAEObjective(config), lambda: VAE(config), tiny, train_config, tmp_path / "broken", resume=True, export=save_weights, progress=False)
    straight = load_safetensors(tmp_path / "straight" / "model.safetensors")
    resumed = load_safetensors(tmp_path / "broken" / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_cvae_draws_the_class_it_is_asked_for(mnist5k, tmp_path):
    run = train_run("cvae", tmp_path / "run", train_options={"max_steps": 400, "batch_size": 64}, progress=False)
    labels = torch.arange(10).repeat_interleave(20)
    samples = run.generate(len(labels), labels, torch.Generator().manual_seed(0))
    means = torch.stack([mnist5k.train.as_float(mnist5k.train.labels == c).mean(0) for c in range(10)])
    predicted = torch.cdist(samples.flatten(1), means.flatten(1)).argmin(dim=1)
    assert float((predicted == labels).float().mean()) > 0.25  # chance is 0.1 (sd 0.02 for 200 draws)


def test_train_and_evaluate_through_the_cli(cli, tmp_path, evaluator_cache):
    run_dir = tmp_path / "vae"
    code, out, err = cli("train", "vae", "--out", run_dir, "--max-steps", "150")
    assert code == 0, err
    assert cli("evaluate", run_dir, "--n-samples", "200", "--iw-samples", "20")[0] == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["elbo_nats"]) and math.isfinite(metrics["nll_nats"])
    assert metrics["nll_nats"] <= metrics["elbo_nats"]
    assert "bits_per_dim" not in metrics and metrics["likelihood_axis"] is None  # Bernoulli: no density on 8 bits
    assert metrics["elbo_nats"] < 300  # an untrained VAE scores ~545 nats on these digits
    code, _, err = cli("sample", run_dir, "--out", tmp_path / "grid.png", "--label", "3")
    assert code == 2 and "unconditional" in err
    assert cli("sample", run_dir, "--out", tmp_path / "grid.png", "--n", "16")[0] == 0
    assert imread(tmp_path / "grid.png").shape[0] > 100
