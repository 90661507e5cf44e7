"""vaediff: VAEs and class-conditional diffusion on small images, fast on a CPU."""

__version__ = "0.1.0"
