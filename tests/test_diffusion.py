import json

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from vaediff.errors import ConfigError
from vaediff.families import load_run, train_run
from vaediff.models.unet import ClassConditionalUNet, preset_config
from vaediff.objectives import BatchRandom
from vaediff.objectives.diffusion import (
    DiffusionObjective,
    diffusion_loss,
    guided_prediction,
    make_sampling_scheduler,
    make_train_scheduler,
    min_snr_weight,
    sample_loop,
)
from vaediff.training import TrainConfig, train

TINY = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8}


def tiny_config(preset="fast", **overrides):
    merged = {**TINY, **overrides}
    if preset == "seed":  # keep the seed's block types (attention included), only smaller
        merged = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, **overrides}
    return preset_config(preset, merged)


@pytest.mark.parametrize("preset", ["seed", "fast"])
def test_forward_shapes_for_both_presets(preset):
    config = preset_config(preset)
    model = ClassConditionalUNet(config)
    out = model(torch.randn(2, 1, 28, 28), torch.tensor([0, 999]), torch.tensor([3, 7]))
    assert out.shape == (2, 1, 28, 28)
    if preset == "seed":
        unet = model.unet.config
        assert unet.in_channels == 5 and unet.layers_per_block == 2 and tuple(unet.block_out_channels) == (32, 64, 64)
        assert tuple(unet.down_block_types) == ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
        assert tuple(unet.up_block_types) == ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
        assert model.class_embedding.weight.shape == (10, 4)
        scheduler = make_train_scheduler(config)
        assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.beta_schedule == "squaredcos_cap_v2"
    else:
        assert model.unet.config.num_class_embeds == 11  # ten classes and the null class


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_noising_and_loss_match_a_hand_computation(prediction_type):
    config = tiny_config(prediction_type=prediction_type, min_snr_gamma=5.0)
    scheduler = make_train_scheduler(config)
    x0, noise = torch.rand(3, 1, 28, 28) * 2 - 1, torch.randn(3, 1, 28, 28)
    t, labels = torch.tensor([10, 500, 990]), torch.tensor([1, 2, 3])
    seen = {}

    def denoiser(x, timesteps, y):
        seen.update(x=x, y=y)
        return 0.5 * x

    terms = diffusion_loss(denoiser, scheduler, config, x0, labels, noise, t, torch.tensor([False, True, False]))
    alpha_bar = torch.cumprod(1 - scheduler.betas, dim=0)[t].view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise  # DDPM eq. 4
    assert torch.allclose(seen["x"], x_t, atol=1e-6)
    assert seen["y"].tolist() == [1, 10, 3]  # the dropped label became the null class
    target = noise if prediction_type == "epsilon" else alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    per_image = (0.5 * x_t - target).pow(2).flatten(1).mean(1)
    snr = (alpha_bar / (1 - alpha_bar)).flatten()
    weight = snr.clamp(max=5.0) / (snr if prediction_type == "epsilon" else snr + 1)
    assert torch.allclose(min_snr_weight(scheduler, t, 5.0, prediction_type), weight)
    assert float(terms["loss"]) == pytest.approx(float((weight * per_image).mean()), rel=1e-5)
    assert float(terms["mse"]) == pytest.approx(float(per_image.mean()), rel=1e-5)


def test_twenty_training_steps_lower_the_loss(tiny, tmp_path):
    config = tiny_config()
    objective = DiffusionObjective(config)
    images, labels = tiny.train.as_float(slice(0, 64)), tiny.train.labels[:64]

    def fixed_loss(model):
        with torch.no_grad():
            return float(objective.losses(model, images, labels, BatchRandom(0, 0, 64, slice(None), torch.device("cpu")))["loss"])

    torch.manual_seed(0)
    start = ClassConditionalUNet(config)
    before = fixed_loss(start)
    models = []
    train(objective, lambda: models.append(ClassConditionalUNet(config)) or models[-1], tiny,
          TrainConfig(max_steps=20, batch_size=32, lr=3e-3, eval_images=64), tmp_path, progress=False)
    assert fixed_loss(models[0]) < 0.8 * before


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion") / "run"
    train_run("diffusion", out, options={"preset": "fast", "model": TINY},
              train_options={"max_steps": 6, "batch_size": 32, "eval_images": 64}, progress=False)
    return out


def test_saved_unet_loads_in_stock_diffusers_with_identical_predictions(tiny_run):
    run = load_run(tiny_run)
    unet = UNet2DModel.from_pretrained(tiny_run / "unet").eval()
    scheduler = DDPMScheduler.from_pretrained(tiny_run / "scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([1, 200, 600, 999]), torch.tensor([0, 3, 9, 10])
    with torch.no_grad():
        assert torch.equal(unet(x, t, class_labels=y).sample, run.model(x, t, y))
    for name in ("samples.png", "denoising.png", "loss.csv", "loss.png"):
        assert (tiny_run / name).is_file()
    assert json.loads((tiny_run / "config.json").read_text())["model"]["preset"] == "fast"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_samplers_return_images_in_range_and_repeat_with_the_seed(tiny_run, sampler):
    run = load_run(tiny_run)
    labels = torch.tensor([0, 5, 9])
    first = run.generate(3, labels, torch.Generator().manual_seed(4), sampler=sampler, steps=5, guidance=2.0)
    again = run.generate(3, labels, torch.Generator().manual_seed(4), sampler=sampler, steps=5, guidance=2.0)
    other = run.generate(3, labels, torch.Generator().manual_seed(5), sampler=sampler, steps=5, guidance=2.0)
    assert first.shape == (3, 1, 28, 28) and bool(torch.isfinite(first).all())  # (clamped to [0, 1] by design)
    assert all(float(image.std()) > 0 for image in first)  # an image, not a constant
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_sampling_schedules_start_at_pure_noise():
    config = preset_config("fast")
    for name in ("ddpm", "ddim", "dpm"):
        scheduler = make_sampling_scheduler(name, make_train_scheduler(config), 10, config)
        assert int(scheduler.timesteps[0]) == 999 and len(scheduler.timesteps) == 10


def test_guidance_zero_is_unconditional_and_one_is_conditional():
    def denoiser(x, t, y):
        return x * (y.float() + 1).view(-1, 1, 1, 1)

    x, t, y = torch.randn(2, 1, 4, 4), torch.tensor(5), torch.tensor([2, 3])
    assert torch.equal(guided_prediction(denoiser, x, t, y, 1.0, 10), denoiser(x, t.expand(2), y))
    assert torch.equal(guided_prediction(denoiser, x, t, y, 0.0, 10), denoiser(x, t.expand(2), torch.full_like(y, 10)))
    mixed = guided_prediction(denoiser, x, t, y, 3.0, 10)
    unconditional, conditional = x * 11, x * (y.float() + 1).view(-1, 1, 1, 1)
    assert torch.allclose(mixed, unconditional + 3.0 * (conditional - unconditional))
    with pytest.raises(ValueError, match="null class"):
        guided_prediction(denoiser, x, t, y, 2.0, None)


def test_guidance_applies_only_inside_its_interval(tiny_run):
    """Two network passes (conditional and null) at the steps with lo <= t/T <= hi, one pass elsewhere."""
    run = load_run(tiny_run)
    calls = []
    network = run.model

    def recording(sample, timesteps, labels):
        calls.append((int(timesteps[0]), len(labels), int((labels == run.model_config.null_label).sum())))
        return network(sample, timesteps, labels)

    run.model = recording
    labels = torch.tensor([0, 5, 9])

    def draw(**options):
        calls.clear()
        images = run.generate(3, labels, torch.Generator().manual_seed(4), sampler="dpm", steps=5, **options)
        return images, list(calls)

    plain, plain_calls = draw(guidance=1.0)
    outside, _ = draw(guidance=2.0, guidance_interval=(0.0, 0.05))  # DPM-5 steps at t = 999, 799, ..., 199
    everywhere, _ = draw(guidance=2.0, guidance_interval=(0.0, 1.0))
    middle, middle_calls = draw(guidance=2.0, guidance_interval=(0.3, 0.7))
    assert [t for t, _, _ in plain_calls] == [999, 799, 599, 399, 199]
    assert torch.equal(outside, plain) and not torch.equal(everywhere, plain)
    assert not torch.equal(middle, plain) and not torch.equal(middle, everywhere)
    assert middle_calls == [(999, 3, 0), (799, 3, 0), (599, 6, 3), (399, 6, 3), (199, 3, 0)]
    for interval in ((0.7, 0.3), (-0.1, 0.5), (0.2, 1.5)):
        with pytest.raises(ConfigError, match="--guidance-interval"):
            run.generate(3, labels, torch.Generator(), guidance_interval=interval)


def test_guidance_interval_is_saved_with_the_config_and_defaults_to_everywhere(tiny_run):
    from vaediff.models.unet import DiffusionConfig
    from vaediff.runs import config_from_dict, config_to_dict

    latent = preset_config("latent")
    assert latent.guidance_interval == (0.1, 0.7) and preset_config("fast").guidance_interval == (0.0, 1.0)
    saved = json.loads(json.dumps(config_to_dict(latent)))
    assert config_from_dict(DiffusionConfig, saved) == latent
    older = {k: v for k, v in saved.items() if k != "guidance_interval"}  # runs written before the key
    assert config_from_dict(DiffusionConfig, older).guidance_interval == (0.0, 1.0)
    assert load_run(tiny_run).sampler_settings()["guidance_interval"] == (0.0, 1.0)


def test_seed_preset_refuses_guidance(tmp_path):
    out = tmp_path / "seed"
    train_run("diffusion", out, options={"preset": "seed", "model": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4}},
                    train_options={"max_steps": 2, "batch_size": 16, "eval_images": 16}, progress=False)
    run = load_run(out)
    assert (out / "class_embedding.safetensors").is_file()
    with pytest.raises(ConfigError, match="guidance"):
        run.generate(2, torch.tensor([1, 2]), torch.Generator(), sampler="dpm", steps=2, guidance=2.0)
    images = run.generate(2, torch.tensor([1, 2]), torch.Generator(), sampler="ddpm", steps=3)
    assert images.shape == (2, 1, 28, 28)


def test_ddim_stays_on_the_path_of_a_clipped_prediction():
    """For data that is one point x0, deterministic DDIM keeps x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps with the
    starting eps. When the predicted x0 lies outside [-1, 1] (as guidance makes it), it is clipped, and eps
    must follow the clipped x0; with the unclipped eps (diffusers' default) the path leaves this line."""
    config = preset_config("fast")
    scheduler = make_sampling_scheduler("ddim", make_train_scheduler(config), 20, config)
    alphas = scheduler.alphas_cumprod
    target = 1.5  # beyond the clipping range: the clipped point is 1.0

    def oracle(x, t, labels):  # the v-prediction of a model whose data is the constant image `target`
        a = alphas[t].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * target) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * target

    noise = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    trajectory: list[torch.Tensor] = []
    sample_loop(oracle, scheduler, noise, torch.zeros(4, dtype=torch.long), 1.0, None, trajectory=trajectory)
    for x, t in zip(trajectory[:-1], scheduler.timesteps[1:], strict=True):  # x_t after each step but the last
        a = alphas[t]
        implied_eps = (x - a.sqrt() * 1.0) / (1 - a).sqrt()
        start_eps = (noise - alphas[scheduler.timesteps[0]].sqrt()) / (1 - alphas[scheduler.timesteps[0]]).sqrt()
        assert torch.allclose(implied_eps, start_eps, atol=1e-3), int(t)
    assert torch.allclose(trajectory[-1], torch.ones_like(noise))
