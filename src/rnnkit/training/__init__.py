"""Training: the one loop (Trainer), its config, checkpoints."""

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .stream import detach_state
from .task import LossResult, Task, TrainingError
from .trainer import Trainer

__all__ = ["Trainer", "TrainConfig", "LossResult", "Task", "TrainingError", "CheckpointError", "detach_state",
           "save_checkpoint", "load_checkpoint", "latest_checkpoint"]
