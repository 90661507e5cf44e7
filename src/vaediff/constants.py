"""Names shared by the library and the CLI; kept free of heavy imports so `vaediff --help` is instant."""

CONFIG_FILE = "config.json"  # in every directory vaediff writes: what wrote it, and how
IMAGE_SIZES = (28, 32, 64)  # square sizes the models are built for
DATASETS = ("mnist-5k", "mnist", "fashion-mnist", "cifar10")  # built-in names; paths are accepted too
DIFFUSION_PRESETS = ("fast", "seed")  # the --preset choices; their configs: models.unet.preset_config
SAMPLERS = ("ddpm", "ddim", "dpm")  # diffusion's
FLOW_SAMPLERS = ("euler", "heun")   # flow matching's
