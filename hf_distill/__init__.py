__version__ = "0.1.0"

from .config import DistillationConfig
from .data import PRESETS, DataArguments, Preset, load_real_data
from .evaluation import accuracy
from .finetune import DistilledDataCollator, soft_label_loss
from .learners import ConvNet, LearnerConfig, LeNet, TextCNN, TextLSTM, build_learner
from .synthetic import DistilledDataset, SyntheticSet
from .trainer import DistillationDivergedError, DistillationTrainer

__all__ = [
    "PRESETS",
    "ConvNet",
    "DataArguments",
    "DistillationConfig",
    "DistillationDivergedError",
    "DistillationTrainer",
    "DistilledDataCollator",
    "DistilledDataset",
    "LeNet",
    "LearnerConfig",
    "Preset",
    "SyntheticSet",
    "TextCNN",
    "TextLSTM",
    "__version__",
    "accuracy",
    "build_learner",
    "load_real_data",
    "soft_label_loss",
]
