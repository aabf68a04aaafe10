"""Latent families behind one interface (:class:`Latent`), chosen by ``model.latent``.

Adding a family is a new module here plus an entry in ``LATENTS``: a class with
``from_config(model_config, in_dim)`` implementing :class:`textvae.latents.base.Latent`.
"""

from .base import Latent
from .gaussian import GaussianLatent, MeanBatchNorm, gaussian_kl, homotopy, log_normal
from .gumbel import GumbelLatent
from .vq import VQLatent

LATENTS: dict[str, type[Latent]] = {"gaussian": GaussianLatent, "gumbel": GumbelLatent, "vq": VQLatent}


def build_latent(cfg, in_dim: int) -> Latent:
    """The latent that ``cfg.latent`` (a :class:`textvae.config.ModelConfig`) names, fed by an
    encoder summary of size ``in_dim``."""
    return LATENTS[cfg.latent].from_config(cfg, in_dim)


__all__ = ["LATENTS", "Latent", "GaussianLatent", "GumbelLatent", "VQLatent", "MeanBatchNorm", "build_latent",
           "gaussian_kl", "homotopy", "log_normal"]
