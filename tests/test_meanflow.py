"""Flow maps (meanflow): the JVP against finite differences, the loss at r = t against flow matching's, one
data point reached in one step, guidance as an input, the stock diffusers loop, bit-exact resume, the
command line and its refusals, and a start from a flow run."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from conftest import assert_one_line_error

from vaediff.families import load_run, train_run
from vaediff.families.meanflow import CONDITIONING_FILE, build_net
from vaediff.models import meanflow as meanflow_models
from vaediff.models.meanflow import MeanFlowConditioning, MeanFlowNet
from vaediff.models.unet import preset_config
from vaediff.objectives import BatchRandom
from vaediff.objectives.flow import flow_loss
from vaediff.objectives.meanflow import (
    MeanFlowObjective,
    flow_map_sample_loop,
    interval_derivative,
    make_flow_map_scheduler,
    meanflow_loss,
)
from vaediff.runs import load_safetensors

TINY = {"denoiser": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8},
        "sampling_steps": 2}
SMALL_NET = {"sample_size": 8, "block_out_channels": [16, 32], "down_block_types": ["DownBlock2D"] * 2,
             "up_block_types": ["UpBlock2D"] * 2, "norm_num_groups": 4}


def small_net(seed: int = 0, conditioned: bool = True) -> MeanFlowNet:
    """An 8x8 network; `conditioned`: its interval and guidance embeddings not at their zero start."""
    torch.manual_seed(seed)
    net = MeanFlowNet(preset_config("fast", SMALL_NET))
    if conditioned:
        for parameter in net.conditioning.parameters():
            torch.nn.init.normal_(parameter, std=0.3)
    return net


def test_the_jvp_is_the_derivative_along_the_path():
    """du/dt with tangent (v, 1, 0) against central differences of u(z + h v, r, t + h), in float64. The
    time embedding is computed in float32 inside diffusers, so h is not tiny and the tolerance relative."""
    net = small_net().double()
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    v = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    t, r = torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64), torch.tensor([0.1, 0.5, 0.0], dtype=torch.float64)
    labels, guidance = torch.tensor([1, 2, 10]), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    derivative = interval_derivative(net, z, t, r, labels, guidance, v)

    def u(x, times):
        return net(x, times * 1000, labels, r * 1000, guidance)

    h = 3e-5
    with torch.no_grad():
        central = (u(z + h * v, t + h) - u(z - h * v, t - h)) / (2 * h)
    assert (central - derivative).abs().max() < 5e-3 * derivative.abs().max()
    # along z alone nothing is in float32: the JVP is the derivative to rounding
    _, along_z = torch.func.jvp(lambda x: u(x, t), (z,), (v,))
    with torch.no_grad():
        central_z = (u(z + 1e-6 * v, t) - u(z - 1e-6 * v, t)) / 2e-6
    assert torch.allclose(along_z, central_z, atol=1e-6 * float(along_z.detach().abs().max()))


@pytest.mark.parametrize("objective", ["imf", "mf"])
def test_with_r_equal_to_t_the_loss_is_flow_matching_on_the_same_draw(objective):
    net = small_net()
    config = net.config
    generator = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(4, 1, 8, 8, generator=generator), torch.randn(4, 1, 8, 8, generator=generator)
    t, labels = torch.rand(4, generator=generator), torch.tensor([0, 1, 2, 3])
    drop = torch.tensor([False, True, False, False])
    flow = flow_loss(net, config, x0, labels, noise, t, drop)["loss"]
    plain = meanflow_loss(net, x0, labels, noise, t, t, torch.ones(4), drop, config.null_label, objective, 0.0)
    weighted = meanflow_loss(net, x0, labels, noise, t, t, torch.ones(4), drop, config.null_label, objective)
    assert torch.equal(plain["loss"], flow) and torch.equal(plain["mse"], flow) and torch.equal(weighted["mse"], flow)
    assert weighted["loss"] < 1  # err / (err + c): the adaptive weight at p = 1


def test_data_that_is_one_point_is_reached_in_one_step():
    """For one data point x*, u(z_t, r, t) = (z_t - x*) / t for every r: one step from noise lands on x*."""
    net = small_net(conditioned=False)
    point = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
    objective = MeanFlowObjective(net.config, "imf", guidance_range=(1.0, 3.0), equal_share=0.5)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    batch = 16
    for step in range(150):
        draw = BatchRandom(0, step, batch, slice(0, batch), torch.device("cpu"))
        loss = objective.losses(net, point.expand(batch, -1, -1, -1), torch.zeros(batch, dtype=torch.long), draw)
        optimizer.zero_grad()
        loss["loss"].backward()
        optimizer.step()
    noise = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = point * 2 - 1
    drawn = flow_map_sample_loop(net.eval(), make_flow_map_scheduler(1), noise, torch.zeros(8, dtype=torch.long), 2.0)
    assert (drawn - target).abs().mean() < 0.25 * (noise - target).abs().mean()


@pytest.fixture(scope="module")
def meanflow_run(tmp_path_factory):
    return train_run("meanflow", tmp_path_factory.mktemp("meanflow") / "run", options={"model": TINY},
                     train_options={"max_steps": 6, "batch_size": 16}, progress=False)


def test_guidance_is_an_input_and_guidance_1_is_the_unguided_draw(meanflow_run):
    labels, generator = torch.tensor([0, 1, 2, 3]), lambda: torch.Generator().manual_seed(3)
    two, four = (meanflow_run.generate(4, labels, generator(), guidance=g) for g in (2.0, 4.0))
    assert not torch.allclose(two, four)
    one = meanflow_run.generate(4, labels, generator(), guidance=1.0, steps=2)
    net, scheduler = meanflow_run.model, make_flow_map_scheduler(2)
    x = torch.randn(4, 1, 28, 28, generator=generator())
    with torch.no_grad():  # the network without a guidance input (w = 1 inside) and no null-class pass
        for index, t in enumerate(scheduler.timesteps):
            r = scheduler.sigmas[index + 1] * 1000
            x = scheduler.step(net(x, t.float(), labels, r.float()), t, x, r_timestep=r).prev_sample
    assert torch.equal(one, ((x + 1) / 2).clamp(0, 1))


def test_outside_its_guidance_interval_a_row_regresses_the_unguided_velocity():
    """The guidance interval is an input: where t lies outside [lo, hi] the target is e - x (w(t) = 1), while
    the network still sees w and [lo, hi]; inside, the guided target (w e-x + (1 - w) u(null))."""
    net = small_net()
    config = net.config
    generator = torch.Generator().manual_seed(5)
    x0, noise = torch.randn(4, 1, 8, 8, generator=generator), torch.randn(4, 1, 8, 8, generator=generator)
    t, labels = torch.tensor([0.9, 0.8, 0.05, 0.3]), torch.tensor([0, 1, 2, 3])
    guidance, drop = torch.full((4,), 3.0), torch.zeros(4, dtype=torch.bool)
    window = torch.tensor([[0.1, 0.7]]).expand(4, 2)
    got = meanflow_loss(net, x0, labels, noise, t, t, guidance, drop, config.null_label, "imf", 0.0,
                        guidance_interval=window)["mse"]
    z_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
    with torch.no_grad():
        u = net(z_t, t * 1000, labels, t * 1000, guidance, window)
        unconditional = net(z_t, t * 1000, torch.full((4,), config.null_label), t * 1000, torch.ones(4))
    target = noise - x0
    target[3] = 3.0 * target[3] + (1 - 3.0) * unconditional[3]  # only t = 0.3 lies in [0.1, 0.7]
    assert torch.allclose(got, (u - target).pow(2).mean(), rtol=1e-5)
    windowed = net(z_t, t * 1000, labels, t * 1000, guidance, window)
    assert not torch.allclose(windowed, net(z_t, t * 1000, labels, t * 1000, guidance))  # [lo, hi] is an input


def test_the_guidance_interval_is_chosen_when_sampling(meanflow_run, cli, tmp_path):
    labels, generator = torch.tensor([0, 1, 2, 3]), lambda: torch.Generator().manual_seed(3)
    run = load_run(meanflow_run.run_dir)
    with torch.no_grad():  # the interval's embedding starts at zero: give it weights to tell intervals apart
        torch.nn.init.normal_(run.model.conditioning.guidance_interval_embedding.linear_2.weight, std=0.3)
    whole, limited = (run.generate(4, labels, generator(), guidance=3.0, guidance_interval=window)
                      for window in ((0.0, 1.0), (0.1, 0.7)))
    assert not torch.allclose(whole, limited)
    code, _, err = cli("sample", meanflow_run.run_dir, "--out", tmp_path / "s.png", "--guidance-interval", "0.6", "0.9")
    assert_one_line_error(code, err, "--guidance-interval 0.6 0.9", "lo <= 0.5 <= hi")
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_stock_diffusers_loop_draws_what_the_run_draws(meanflow_run, steps):
    """UNet2DModel and FlowMapEulerDiscreteScheduler from the run directory, the conditioning vector from
    RUN/conditioning.safetensors: z_r = z_t - (t - r) u, the loop written out."""
    from diffusers import FlowMapEulerDiscreteScheduler, UNet2DModel

    run_dir = meanflow_run.run_dir
    unet = UNet2DModel.from_pretrained(run_dir / "unet").eval()
    scheduler = FlowMapEulerDiscreteScheduler.from_pretrained(run_dir / "scheduler")
    scheduler.set_timesteps(steps)
    width = unet.config.block_out_channels[0]
    conditioning = MeanFlowConditioning(11, width, width * 4)
    conditioning.load_state_dict(load_safetensors(run_dir / CONDITIONING_FILE))
    labels, guidance = torch.tensor([0, 1, 2, 3]), torch.full((4,), 3.0)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for index, t in enumerate(scheduler.timesteps):
            r = scheduler.sigmas[index + 1] * 1000
            added = conditioning(labels, (t - r).float().expand(4), guidance, torch.tensor([[0.1, 0.7]]).expand(4, 2))
            u = unet(x, t.float(), class_labels=added).sample
            x = scheduler.step(u, t, x, r_timestep=r).prev_sample
    ours = load_run(run_dir).generate(4, labels, torch.Generator().manual_seed(0), steps=steps, guidance=3.0,
                                      guidance_interval=(0.1, 0.7))
    assert torch.allclose(((x + 1) / 2).clamp(0, 1), ours, atol=1e-5)


def test_resume_gives_the_weights_of_an_unbroken_run(tmp_path):
    """4 steps at once against 2, then --resume to 4 (a constant rate: the schedule does not see the limit)."""
    recipe = {"batch_size": 8, "lr_schedule": "constant", "warmup_steps": 0}
    train_run("meanflow", tmp_path / "straight", options={"model": TINY}, train_options={**recipe, "max_steps": 4},
              progress=False, figures=False)
    train_run("meanflow", tmp_path / "resumed", options={"model": TINY}, train_options={**recipe, "max_steps": 2},
              progress=False, figures=False)
    train_run("meanflow", tmp_path / "resumed", train_options={**recipe, "max_steps": 4}, resume=True,
              progress=False, figures=False)
    for name in ("unet/diffusion_pytorch_model.safetensors", CONDITIONING_FILE, "resume.safetensors"):
        straight, resumed = load_safetensors(tmp_path / "straight" / name), load_safetensors(tmp_path / "resumed" / name)
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name  # bit for bit


def test_the_command_line_trains_samples_and_refuses_in_one_line(cli, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = cli("train", "meanflow", "--out", run_dir, "--max-steps", "3", "--batch-size", "8",
                       "--model-config", json.dumps(TINY), "--objective", "mf")
    assert code == 0, err
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_type"] == "meanflow" and config["model"]["objective"] == "mf"
    code, _, err = cli("sample", run_dir, "--out", tmp_path / "a.png", "--n", "4", "--steps", "1", "--guidance", "3")
    assert code == 0, err
    code, _, err = cli("sample", run_dir, "--out", tmp_path / "b.png", "--guidance", "7")
    assert_one_line_error(code, err, "--guidance 7 is outside the range", "1 to 6")
    assert not (tmp_path / "b.png").exists()
    code, _, err = cli("train", "meanflow", "--out", tmp_path / "x", "--max-steps", "1", "--init", run_dir)
    assert_one_line_error(code, err, "a meanflow run; --init takes a flow run")
    code, _, err = cli("train", "meanflow", "--out", tmp_path / "y", "--max-steps", "1", "--init", tmp_path)
    assert_one_line_error(code, err, "not a flow run")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_init_starts_from_the_flow_run_s_network(tmp_path):
    """Copied weights, and the zero-started interval and guidance embeddings: the untrained meanflow network
    at r = t is the flow run's network, whatever the guidance input."""
    flow = train_run("flow", tmp_path / "flow", options={"model": TINY}, train_options={"max_steps": 2, "batch_size": 8},
                     progress=False, figures=False)
    run = train_run("meanflow", tmp_path / "mf", options={"model": {"sampling_steps": 2}, "init": str(flow.run_dir)},
                    train_options={"max_steps": 1, "batch_size": 8}, progress=False, figures=False)
    assert run.model_config.block_out_channels == flow.model_config.block_out_channels  # the flow run's network
    net = build_net(run.flow_config, str(flow.run_dir)).eval()
    x, t, labels = torch.randn(2, 1, 28, 28), torch.tensor([700.0, 300.0]), torch.tensor([4, 10])
    with torch.no_grad():
        assert torch.allclose(net(x, t, labels, t, torch.tensor(5.0)), flow.model(x, t, labels), atol=1e-5)


def test_a_network_with_attention_trains_and_a_kernel_without_forward_ad_is_one_line(cli, tmp_path, monkeypatch):
    """The JVP runs attention on the math kernel (the fused ones have no forward-mode derivative); where even
    that fails, one line says so before anything is written."""
    attention = {**TINY, "denoiser": {**TINY["denoiser"], "mid_block_attention": True}}
    args = ("--max-steps", "1", "--batch-size", "8", "--model-config", json.dumps(attention))
    code, _, err = cli("train", "meanflow", "--out", tmp_path / "a", *args)
    assert code == 0, err
    monkeypatch.setattr(meanflow_models, "forward_ad_attention", contextlib.nullcontext)
    code, _, err = cli("train", "meanflow", "--out", tmp_path / "b", *args)
    assert_one_line_error(code, err, "forward-mode differentiation", "without attention")
    assert not (tmp_path / "b").exists()


def test_mixed_precision_trains(cli, tmp_path):
    """Under --mixed-precision the JVP runs in float32 (autocast's casts are not followed by forward-mode AD).
    Accelerate keeps one precision a process: its state is reset around this run."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        code, _, err = cli("train", "meanflow", "--out", tmp_path / "run", "--max-steps", "2", "--batch-size", "8",
                           "--mixed-precision", "bf16", "--model-config", json.dumps(TINY))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert code == 0, err


def test_a_run_from_before_the_guidance_interval_input_still_loads(meanflow_run, tmp_path, capsys):
    """Its conditioning file lacks the interval's embedding: it gets the zero start (no effect) and a notice."""
    import shutil

    from vaediff.runs import atomic_save_safetensors

    old = tmp_path / "old"
    shutil.copytree(meanflow_run.run_dir, old)
    kept = {k: v for k, v in load_safetensors(old / CONDITIONING_FILE).items()
            if not k.startswith("guidance_interval_embedding.")}
    atomic_save_safetensors(kept, old / CONDITIONING_FILE)
    run = load_run(old)
    assert "trained before the guidance interval" in capsys.readouterr().err
    labels = torch.tensor([0, 1])
    whole, limited = (run.generate(2, labels, torch.Generator().manual_seed(0), guidance=3.0, guidance_interval=w)
                      for w in ((0.0, 1.0), (0.1, 0.7)))
    assert torch.equal(whole, limited)
