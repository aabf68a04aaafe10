"""textvae: sentence variational autoencoders (Bowman et al. 2016), trained and measured properly.

Public API::

    from textvae import TextVAE, load_config, train, evaluate
    cfg = load_config(preset="default", overrides=["train.max_epochs=4"])
    train(cfg, "runs/demo")                               # a run directory
    model = TextVAE.from_pretrained("runs/demo")          # its best model (or "owner/name" on the Hub)
    model.sample(5); model.reconstruct(["a sentence ."]); model.interpolate("a .", "b .", steps=5)

``train`` and ``evaluate`` are the functions :func:`textvae.train.train` and
:func:`textvae.metrics.evaluate`; the package attribute ``textvae.train`` is therefore the function, and
the module is reached with ``from textvae.train import ...`` or ``importlib.import_module("textvae.train")``.
"""

from .config import Config, DataConfig, ModelConfig, ObjectiveConfig, SampleConfig, TokenizerConfig, TrainConfig
from .config_files import list_presets, load_config
from .errors import CheckpointError, ConfigError, DataError, TextVAEError, TrainingError
from .metrics import evaluate
from .model import TextVAE
from .train import train
from .version import __version__

__all__ = ["TextVAE", "Config", "DataConfig", "TokenizerConfig", "ModelConfig", "ObjectiveConfig", "TrainConfig",
           "SampleConfig", "load_config", "list_presets", "train", "evaluate", "TextVAEError", "ConfigError",
           "DataError", "CheckpointError", "TrainingError", "__version__"]
