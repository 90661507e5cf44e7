"""`train MODEL --model-config JSON`: every value is checked before anything is trained or written (issue 30).

Through the CLI, the cases once found failing: one line, exit 2, nothing in --out. At the library level, a
property-based test draws configs for every family (real keys and unknown ones; wrong types, nulls, NaN and
infinities, huge and tiny numbers, nested lists and objects): each is either refused with one ConfigError
line or builds a config that config.json can hold, that loads back, and whose network is of bounded size.
"""

from __future__ import annotations

import dataclasses
import json
import math
from unittest import mock

import pytest
from conftest import assert_one_line_error
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vaediff.data import MNIST_SHAPE, DataShape
from vaediff.errors import ConfigError
from vaediff.families import family_of
from vaediff.families.flow import FlowConfig
from vaediff.models.autoencoder import AutoencoderConfig
from vaediff.models.limits import MAX_PARAMETERS, check_parameters
from vaediff.models.unet import DiffusionConfig
from vaediff.models.vae import VAEConfig
from vaediff.runs import config_from_dict, config_to_dict

FOUR_LEVELS = json.dumps({"block_out_channels": [16, 32, 64, 64], "down_block_types": ["DownBlock2D"] * 4,
                          "up_block_types": ["UpBlock2D"] * 4})

# (model type, --model-config, a fragment of the one line that refuses it)
REFUSED = [
    ("diffusion", '{"sampling_steps": 100000}', "sampling_steps must be between 1 and 1,000, got 100,000"),
    ("flow", '{"sampling_steps": 100000}', "sampling_steps must be between 1 and 1,000, got 100,000"),
    ("diffusion", '{"denoiser": [1, 2]}', "unknown key 'denoiser' for DiffusionConfig"),
    ("flow", '{"denoiser": [1, 2]}', "'denoiser' must be a JSON object of DiffusionConfig fields, got a list"),
    ("flow", '{"denoiser": null}', "'denoiser' must be a JSON object of DiffusionConfig fields, got null"),
    ("latent-diffusion", '{"denoiser": null}', "'denoiser' must be a JSON object of DiffusionConfig fields, got null"),
    ("latent-flow", '{"autoencoder": [1, 2]}', "'autoencoder' must be a JSON object of AutoencoderConfig fields"),
    ("latent-diffusion", '{"autoencoder": [1, 2]}', "'autoencoder' must be a JSON object of AutoencoderConfig fields"),
    ("latent-flow", '{"flow": "euler"}', "'flow' must be a JSON object of FlowConfig fields, got a string"),
    ("diffusion", '{"norm_num_groups": 7}', "multiples of norm_num_groups (7)"),
    ("flow", '{"denoiser": {"norm_num_groups": 7}}', "multiples of norm_num_groups (7)"),
    ("latent-diffusion", '{"autoencoder": {"norm_num_groups": 7}}', "multiples of norm_num_groups (7)"),
    ("diffusion", '{"guidance": NaN}', "key 'guidance' must be a finite number"),
    ("flow", '{"logit_std": NaN}', "key 'logit_std' must be a finite number"),
    ("latent-flow", '{"flow": {"guidance": Infinity}}', "key 'guidance' must be a finite number"),
    ("vae", '{"latent": 100000000}', "VAEConfig.latent must be between 1 and 8,192"),
    ("cvae", '{"hidden": true}', "key 'hidden' must be an integer"),
    ("diffusion", FOUR_LEVELS, "must be a multiple of 8"),
    ("latent-diffusion", '{"denoiser": {"foo": 1}}', "unknown key 'foo' for DiffusionConfig"),
]


@pytest.mark.parametrize(("model", "config", "fragment"), REFUSED)
def test_a_refused_model_config_is_one_line_and_writes_nothing(cli, tmp_path, model, config, fragment):
    code, _, err = cli("train", model, "--out", tmp_path / "run", "--model-config", config, "--max-steps", "1")
    assert_one_line_error(code, err, "--model-config", fragment)
    assert not (tmp_path / "run").exists()


def build(model_type: str, model: dict, shape: DataShape = MNIST_SHAPE):
    """What `train MODEL --model-config JSON` builds before anything is written (families._new_configs)."""
    family = family_of(model_type)
    return family.build_config(model_type, {**family.defaults(), "model": model}, shape)


# the same checks at the library level: what each key refuses, by family (fast: no data are loaded)
LIBRARY = [
    ("vae", {"hidden": -1}, "VAEConfig.hidden must be positive"),
    ("vae", {"hidden": "400"}, "key 'hidden' must be an integer, got '400'"),
    ("vae", {"hidden": 4.5}, "key 'hidden' must be an integer"),
    ("vae", {"depth": 3}, "unknown key 'depth' for VAEConfig"),
    ("vae", {"image_size": 32}, "'image_size' follows the data"),
    ("cvae", {"conditional": False}, "'conditional' follows the data"),
    ("vae", {"decoder": ["bernoulli"]}, "key 'decoder' must be one of"),
    ("diffusion", {"layers_per_block": 0}, "layers_per_block must be between 1 and 8"),
    ("diffusion", {"num_train_timesteps": 10**12}, "num_train_timesteps must be between 2 and 10,000"),
    ("diffusion", {"num_train_timesteps": 10}, "sampling_steps must be between 1 and 10, got 20"),
    ("diffusion", {"block_out_channels": [0, 8, 8]}, "each of block_out_channels must be between 1 and 8,192"),
    ("diffusion", {"block_out_channels": [16] * 7, "down_block_types": ["DownBlock2D"] * 7,
                   "up_block_types": ["UpBlock2D"] * 7}, "number of levels"),
    ("diffusion", {"down_block_types": ["Foo", "DownBlock2D", "DownBlock2D"]}, "the network cannot be built: Foo"),
    ("diffusion", {"mid_block_attention": True, "attention_head_dim": 128}, "attention_head_dim (128) must be at most"),
    ("diffusion", {"beta_schedule": "cosine"}, "key 'beta_schedule' must be one of"),
    ("diffusion", {"channels": 3}, "'channels' follows the data"),
    ("diffusion", {"min_snr_gamma": -1}, "min_snr_gamma must be a positive number or null"),
    ("diffusion", {"min_snr_gamma": float("nan")}, "key 'min_snr_gamma' must be a finite number"),
    ("diffusion", {"guidance": -1}, "guidance must be a number >= 0"),
    ("diffusion", {"guidance": 10**400}, "key 'guidance' must be a finite number"),
    ("diffusion", {"guidance_interval": [0.5]}, "guidance_interval must be two numbers"),
    ("diffusion", {"label_dropout": 1}, "label_dropout must be in [0, 1)"),
    ("diffusion", {"block_out_channels": [2048, 4096, 8192]}, "parameters"),
    ("flow", {"sampling_steps": 0}, "sampling_steps must be between 1 and 1,000, got 0"),
    ("flow", {"logit_std": -1}, "logit_std must be positive"),
    ("flow", {"sampler": "dpm"}, "key 'sampler' must be one of ['euler', 'heun']"),
    ("flow", {"denoiser": {"conditioning": "concat", "label_dropout": 0, "guidance": 1}},
     "concat conditioning has no null class, so no classifier-free guidance"),
    ("flow", {"denoiser": {"data_range": "zero_one"}}, "flow matching runs on pixels in [-1, 1]"),
    ("latent-diffusion", {"autoencoder": {"latent_channels": 0}}, "latent_channels must be between 1 and 8,192"),
    ("latent-diffusion", {"autoencoder": {"kl_weight": -1}}, "kl_weight must be a number >= 0"),
    ("latent-diffusion", {"autoencoder": {"image_size": 32}}, "'image_size' follows the data"),
    ("latent-diffusion", {"autoencoder": {"discriminator_channels": 0}}, "discriminator_channels must be"),
    ("latent-diffusion", {"autoencoder_share": "half"}, "key 'autoencoder_share' must be a number"),
    ("latent-diffusion", {"autoencoder_lr": 0}, "autoencoder_lr must be a positive number"),
    ("latent-diffusion", {"autoencoder_batch_size": -3}, "autoencoder_batch_size must be between 1 and"),
    ("latent-diffusion", {"denoiser": {"channels": 8}}, "'channels' follows the data"),
    ("latent-diffusion", {"flow": {}}, "unknown key 'flow' for latent-diffusion"),
    ("latent-flow", {"flow": {"denoiser": [1]}}, "key 'flow': key 'denoiser' must be a JSON object"),
    ("latent-flow", {"flow": {"sampling_steps": 5000}}, "sampling_steps must be between 1 and 1,000"),
    ("latent-flow", {"flow": {"denoiser": {"norm_num_groups": 7}}}, "multiples of norm_num_groups (7)"),
]


@pytest.mark.parametrize(("model_type", "model", "fragment"), LIBRARY)
def test_each_key_is_checked_by_name(model_type, model, fragment):
    with pytest.raises(ConfigError) as caught:
        build(model_type, model)
    message = str(caught.value)
    assert message.startswith("--model-config") and "\n" not in message
    assert fragment in message, message


@pytest.mark.parametrize(("model_type", "model"), [
    ("vae", {"hidden": 8192, "latent": 1}),
    ("diffusion", {"sampling_steps": 1000, "sampler": "ddpm"}),
    ("diffusion", {"num_train_timesteps": 50, "sampling_steps": 50, "min_snr_gamma": None}),
    ("flow", {"sampling_steps": 1000, "guidance": 0, "logit_mean": -2}),
    ("latent-flow", {"flow": {"sampling_steps": 1, "denoiser": {"norm_num_groups": 16}}}),
    ("latent-diffusion", {"autoencoder": {"latent_channels": 8}, "denoiser": {"sampling_steps": 1}}),
])
def test_values_at_the_bounds_are_accepted(model_type, model):
    config = build(model_type, model)
    assert config_from_dict(type(config), json.loads(json.dumps(config_to_dict(config), allow_nan=False))) == config


# ---------------------------------------------------------------------------------------------------------
# Property: any JSON object is refused in one line, or builds a config that can be saved and loaded back


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


NESTED = {"denoiser": DiffusionConfig, "autoencoder": AutoencoderConfig, "flow": FlowConfig}
CONFIGS = {"vae": VAEConfig, "cvae": VAEConfig, "diffusion": DiffusionConfig, "flow": FlowConfig,
           "latent-diffusion": family_of("latent-diffusion").config_class,
           "latent-flow": family_of("latent-flow").config_class}
VALID_WORDS = ["DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D", "euler", "heun", "dpm", "ddim",
               "ddpm", "bernoulli", "discretized-logistic", "concat", "class_embedding", "linear", "v_prediction",
               "epsilon", "unbounded", "minus_one_one", "zero_one", "fast", "seed", "latent"]

leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers(1, 64), st.sampled_from([0, -1, 2**31, 2**63, 10**30, -(10**30)]),
    st.floats(0, 1), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(VALID_WORDS), st.text(max_size=6),
)
values = st.one_of(leaves, st.lists(st.one_of(st.sampled_from([4, 8, 16, 32]), leaves), max_size=4),
                   st.dictionaries(st.text(max_size=4), leaves, max_size=2))


def objects_of(cls: type, depth: int = 1) -> st.SearchStrategy[dict]:
    """JSON objects with keys of `cls` (and unknown ones), values of any JSON type, nested objects for nested
    configs."""
    keys = st.sampled_from([*field_names(cls), "bogus", "Hidden", ""])

    def value_for(key: str) -> st.SearchStrategy:
        if depth and key in NESTED and key in field_names(cls):
            return st.one_of(objects_of(NESTED[key], depth - 1), values)
        return values

    return st.lists(keys.flatmap(lambda key: st.tuples(st.just(key), value_for(key))), max_size=4).map(dict)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), model_type=st.sampled_from(list(CONFIGS)),
       shape=st.sampled_from([MNIST_SHAPE, DataShape(3, 32, 1, False)]))
def test_fuzz_model_configs_are_refused_in_one_line_or_build(data, model_type, shape):
    model = data.draw(objects_of(CONFIGS[model_type]))
    built = []  # parameters of each network dry-built on the meta device (no memory is allocated)

    def counted(count: int, where: str) -> None:
        built.append(count)
        check_parameters(count, where)

    with mock.patch("vaediff.models.limits.check_parameters", side_effect=counted):
        try:
            config = build(model_type, model, shape)
        except ConfigError as exc:  # any other exception fails the test
            message = str(exc)
            assert message and "\n" not in message and len(message) < 2000
            event("refused")
            return
    event("accepted")
    assert isinstance(config, CONFIGS[model_type])
    saved = json.loads(json.dumps(config_to_dict(config), allow_nan=False))  # config.json refuses NaN
    assert config_from_dict(type(config), saved) == config
    assert all(math.isfinite(v) for v in _numbers(saved))
    # every network of an accepted config was built (the autoencoder and the denoiser for latent models)
    assert len(built) == (2 if model_type.startswith("latent") else 1)
    assert all(0 < count <= MAX_PARAMETERS for count in built)


def _numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []
