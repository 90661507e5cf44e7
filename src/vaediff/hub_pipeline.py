"""Copied into every run that draws by a sampler as RUN/vaediff_pipeline.py, which RUN/model_index.json names
(`_class_name: ["vaediff_pipeline", "VaediffPipeline"]`): diffusers' rule for a pipeline class it does not ship
is a module beside the weights, so stock `DiffusionPipeline.from_pretrained(RUN, trust_remote_code=True)`
imports VaediffPipeline from here (vaediff installed)."""

from vaediff.pipelines import VaediffPipeline

__all__ = ["VaediffPipeline"]
