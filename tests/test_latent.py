"""Latent diffusion: two stages through the real command line, a latent scaled to unit variance, the
denoiser loadable by stock diffusers, an autoencoder reused by a second run, every metric key."""

import json

import pytest
import torch
from PIL import Image

from vaediff.families import load_run
from vaediff.runs import load_safetensors

TINY = {"autoencoder": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4},
        "denoiser": {"block_out_channels": [16], "norm_num_groups": 4, "attention_head_dim": 8, "sampling_steps": 4}}


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    from vaediff.cli import main

    run_dir = tmp_path_factory.mktemp("latent") / "run"
    assert main(["train", "latent-diffusion", "--out", str(run_dir), "--max-steps", "12", "--batch-size", "32",
                 "--model-config", json.dumps(TINY)]) == 0
    return run_dir


def test_two_stages_write_a_loadable_run_with_unit_variance_latents(latent_run, mnist5k):
    from diffusers import UNet2DModel

    for name in ("config.json", "loss.csv", "samples.png", "unet/config.json", "scheduler/scheduler_config.json",
                 "autoencoder/done.json"):
        assert (latent_run / name).is_file(), name
    run = load_run(latent_run)
    with torch.no_grad():
        means, _ = run.autoencoder.encode(mnist5k.test.as_float(slice(0, 500)))
    latents = means * run.scaling_factor
    assert latents.shape[1:] == (4, 7, 7)
    assert 0.8 < float(latents.std()) < 1.25  # the scale factor makes the denoiser's data unit-variance
    stock = UNet2DModel.from_pretrained(latent_run / "unet").eval()
    x, t, y = torch.randn(3, 4, 7, 7), torch.tensor([10, 500, 900]), torch.tensor([0, 5, 10])
    with torch.no_grad():
        assert torch.allclose(stock(x, t, class_labels=y).sample, run.model.unet(x, t, class_labels=y).sample)


def test_sample_grid_and_every_metric(latent_run, cli, tmp_path, evaluator_cache):
    code, _, err = cli("sample", latent_run, "--out", tmp_path / "grid.png", "--sampler", "ddim", "--steps", "3")
    assert code == 0, err
    assert Image.open(tmp_path / "grid.png").size[0] >= 10 * 28  # 10 x 10, one row per class
    code, _, err = cli("evaluate", latent_run, "--n-samples", "40", "--steps", "3")
    assert code == 0, err
    metrics = json.loads((latent_run / "metrics.json").read_text())
    for key in ("fid", "fid_real", "kid", "precision", "recall", "density", "coverage", "is", "class_accuracy",
                "memorisation", "samples_per_second", "autoencoder_fid", "evaluator_accuracy"):
        assert key in metrics, key
    assert metrics["fid_real"] < metrics["fid"]


def test_second_run_reuses_the_autoencoder(latent_run, cli, tmp_path):
    second = tmp_path / "second"
    code, _, err = cli("train", "latent-diffusion", "--out", second, "--autoencoder", latent_run, "--max-steps", "3",
                       "--batch-size", "32", "--model-config", json.dumps({"denoiser": TINY["denoiser"]}))
    assert code == 0, err
    first_weights = load_safetensors(next((latent_run / "autoencoder").glob("*.safetensors")))
    second_weights = load_safetensors(next((second / "autoencoder").glob("*.safetensors")))
    assert all(torch.equal(first_weights[k], second_weights[k]) for k in first_weights)
    assert load_run(second).scaling_factor == load_run(latent_run).scaling_factor
    code, _, err = cli("train", "latent-diffusion", "--out", tmp_path / "third", "--autoencoder", tmp_path / "none")
    assert code == 2 and "--autoencoder" in err


def test_stage_one_logs_the_adversarial_terms(latent_run):
    header, *rows = (latent_run / "autoencoder" / "loss.csv").read_text().splitlines()
    columns = header.split(",")
    for name in ("train_recon", "train_kl", "train_critic", "train_adversarial", "test_recon"):
        assert name in columns, name
    last = dict(zip(columns, rows[-1].split(","), strict=True))
    assert float(last["train_critic"]) > 0 and last["test_critic"] == ""  # the critic is trained, not evaluated


def test_stage_one_exports_the_moving_average_of_its_weights(latent_run):
    from vaediff.families.latent import LatentDiffusionConfig
    from vaediff.models.autoencoder import AdversarialAutoencoder
    from vaediff.runs import config_from_dict

    config = config_from_dict(LatentDiffusionConfig, json.loads((latent_run / "config.json").read_text())["model"])
    assert config.autoencoder_ema_decay is not None
    checkpoint = load_safetensors(latent_run / "autoencoder" / "resume.safetensors")
    exported = load_safetensors(next((latent_run / "autoencoder").glob("*.safetensors")))
    names = [name for name, _ in AdversarialAutoencoder(config.autoencoder).named_parameters()]
    averaged = {name.removeprefix("autoencoder.vae."): checkpoint[f"ema.{index}"]
                for index, name in enumerate(names) if name.startswith("autoencoder.vae.")}
    assert averaged.keys() == exported.keys()
    assert all(torch.equal(averaged[k], exported[k]) for k in exported)
    live = checkpoint["model.autoencoder.vae.decoder.conv_out.weight"]
    assert not torch.allclose(live, exported["decoder.conv_out.weight"])  # the average, not the last step


def test_adaptive_weight_balances_the_two_gradients():
    from vaediff.objectives.vae import adaptive_weight

    weight = torch.ones(3, requires_grad=True)
    reconstruction = (weight * torch.tensor([3.0, 0.0, 4.0])).sum()  # gradient norm 5
    adversarial = (weight * torch.tensor([0.0, 0.5, 0.0])).sum()     # gradient norm 0.5
    assert float(adaptive_weight(reconstruction, adversarial, weight)) == pytest.approx(5 / (0.5 + 1e-4))


def _gradients(progress: float):
    """Gradients of one step's loss at `progress`, for the autoencoder and the critic, and its terms."""
    from vaediff.models.autoencoder import AdversarialAutoencoder, AutoencoderConfig
    from vaediff.objectives import BatchRandom
    from vaediff.objectives.vae import AutoencoderObjective

    torch.manual_seed(0)
    config = AutoencoderConfig(block_out_channels=(8, 16, 16), norm_num_groups=4, discriminator_channels=8)
    module, objective = AdversarialAutoencoder(config), AutoencoderObjective(config)
    images, labels = torch.rand(6, 1, 28, 28), torch.zeros(6, dtype=torch.long)
    terms = objective.losses(module, images, labels, BatchRandom(0, 0, 6, slice(None), torch.device("cpu"), progress))
    terms["loss"].backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return grads, terms, config


def test_each_player_learns_from_its_own_loss_from_its_start():
    early, terms, config = _gradients(0.0)  # before discriminator_start: the plain -ELBO, critic idle
    assert torch.allclose(terms["loss"], terms["recon"] + config.kl_weight * terms["kl"])
    assert all(float(g.abs().max()) == 0 for name, g in early.items() if name.startswith("discriminator"))
    critic_only, _, _ = _gradients(0.4)  # the critic learns; the decoder does not hear it yet
    assert any(float(g.abs().max()) > 0 for name, g in critic_only.items() if name.startswith("discriminator"))
    assert all(torch.equal(early[name], critic_only[name]) for name in early if name.startswith("autoencoder"))
    both, terms, _ = _gradients(1.0)  # the adversarial term reaches the decoder, and not the critic
    decoder = "autoencoder.vae.decoder.conv_out.weight"
    assert not torch.allclose(both[decoder], early[decoder])
    assert all(torch.equal(both[name], critic_only[name]) for name in both if name.startswith("discriminator"))


def test_latent_flow_trains_on_a_reused_autoencoder_and_samples_with_stock_diffusers(latent_run, cli, tmp_path):
    """latent-flow: latent diffusion's stage one, flow matching's objective and schedulers on the latent."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    run_dir = tmp_path / "latent-flow"
    tiny_flow = {"sampling_steps": 3, "denoiser": {k: v for k, v in TINY["denoiser"].items() if k != "sampling_steps"}}
    code, _, err = cli("train", "latent-flow", "--out", run_dir, "--autoencoder", latent_run, "--max-steps", "6",
                       "--batch-size", "32", "--model-config", json.dumps({"flow": tiny_flow}))
    assert code == 0, err
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_type"] == "latent-flow" and config["model"]["flow"]["sampling_steps"] == 3
    run = load_run(run_dir)
    assert run.sampler_settings()["sampler"] == "euler" and run.scaling_factor == load_run(latent_run).scaling_factor
    images = run.generate(4, torch.tensor([0, 1, 2, 3]), torch.Generator().manual_seed(0), sampler="heun", steps=2)
    assert images.shape == (4, 1, 28, 28) and 0 <= float(images.min()) and float(images.max()) <= 1
    # stage two in diffusers' layout: stock classes load the velocity field and its scheduler
    stock = UNet2DModel.from_pretrained(run_dir / "unet").eval()
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(run_dir / "scheduler")
    scheduler.set_timesteps(3)
    x, y = torch.randn(2, 4, 7, 7), torch.tensor([3, 3])
    with torch.no_grad():
        t = scheduler.timesteps[0]
        assert torch.allclose(stock(x, t, class_labels=y).sample, run.model.unet(x, t, class_labels=y).sample)
    # errors name the option: the latent-diffusion key, a diffusion sampler
    code, _, err = cli("train", "latent-flow", "--out", tmp_path / "bad", "--model-config", '{"denoiser": {}}')
    assert code == 2 and "unknown key 'denoiser' for latent-flow" in err and not (tmp_path / "bad").exists()
    code, _, err = cli("sample", run_dir, "--sampler", "dpm", "--out", tmp_path / "x.png")
    assert code == 2 and "euler, heun" in err
