"""vaediff's benchmarks: measurements on this machine, not tests. Run each from the repository root:

    uv run python -m benchmarks.NAME [flags]      # --help lists a script's flags

Scripts:
    run                 the suite: speed and quality against the seed's configuration (--quick: ~10 min)
    quickstart          `vaediff quickstart` end to end: minutes, peak memory, accuracies
    levers              CPU speed levers one at a time on the fast preset (--compile)
    profile_step        torch.profiler's operator table of one model's training step
    multiprocess        one training process against N (torchrun)
    latent_autoencoder  latent diffusion's stage one with and without its patch critic (--trajectory)
    guidance_interval   guidance scale x guidance interval on one trained run
    verdicts            CAS against real data's, and the guidance each of class accuracy and CAS prefers
    likelihood          bits/dim of every family, its cost and its precision
    own_data            the user's own images: PNG loading, 32x32 RGB training speed and quality
    aa_test             an A/A test of the report's verdicts (two seeds of one recipe)
    study_budget        does a study's --minutes budget hold, and does fixed work repeat exactly

Shared parts: harness (results folder, log, CPU, commit, writing JSON + Markdown); the suite's sections
speed, quality, sampling, memory (with memory_probe, one process per model), latent and flow. Results land
in benchmarks/results/.
"""
