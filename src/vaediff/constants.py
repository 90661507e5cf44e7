"""Names shared by the library and the CLI; kept free of heavy imports so `vaediff --help` is instant."""

DATASETS = ("mnist-5k", "mnist", "fashion-mnist")
MODEL_TYPES = ("vae", "cvae", "diffusion", "latent-diffusion")
DIFFUSION_PRESETS = ("fast", "seed")  # the --preset choices; their configs: models.unet.preset_config
SAMPLERS = ("ddpm", "ddim", "dpm")
