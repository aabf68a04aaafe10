"""textvae: sentence variational autoencoders (Bowman et al. 2016), trained and measured properly.

Public API::

    from textvae import TextVAE, Config, load_config, train, evaluate
    model = TextVAE.from_pretrained("runs/demo")          # a run or model directory
    model.sample(5); model.reconstruct(["a sentence ."]); model.interpolate("a .", "b .", steps=5)
"""

from .config import Config, DataConfig, ModelConfig, ObjectiveConfig, SampleConfig, TokenizerConfig, TrainConfig, load_config
from .errors import CheckpointError, ConfigError, DataError, TextVAEError, TrainingError
from .model import TextVAE

__version__ = "0.1.0"


__all__ = ["TextVAE", "Config", "DataConfig", "TokenizerConfig", "ModelConfig", "ObjectiveConfig", "TrainConfig",
           "SampleConfig", "load_config", "train", "evaluate", "TextVAEError", "ConfigError", "DataError",
           "CheckpointError", "TrainingError"]
