"""Training: the loop (loop.py) and what it stands on: the config and plan (config.py), the loss history
(history.py), the checkpoint format (checkpoint.py), processes and signals (processes.py)."""

from vaediff.training.checkpoint import CHECKPOINT_FILE, Export
from vaediff.training.config import TrainConfig, TrainState, WarmupCosine
from vaediff.training.loop import train
from vaediff.training.processes import is_main_process, wait_for_everyone

__all__ = ["CHECKPOINT_FILE", "Export", "TrainConfig", "TrainState", "WarmupCosine", "is_main_process", "train",
           "wait_for_everyone"]
