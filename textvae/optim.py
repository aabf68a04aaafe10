"""The optimiser and its schedule: Adam or SGD, model selection on the validation score, and Bowman
et al.'s plateau schedule (decay the learning rate when validation stops improving, stop early once
decays no longer help). Each is a named step the training loop calls after a validation."""

import torch

from .checkpoint import Progress


def record_score(p: Progress, score: float) -> bool:
    """A scheduled validation's ``score``: True when it improves on the schedule's best so far (the
    plateau starts again), else one more bad evaluation. best/ follows :func:`improves_best`."""
    if score < p.plateau_best - 1e-6:
        p.plateau_best, p.bad_evals = score, 0
        return True
    p.bad_evals += p.step > 0
    return False


def improves_best(p: Progress, score: float) -> bool:
    """Model selection, for any validation: True when ``score`` beats what best/ holds (best/ is then
    saved), with the best so far updated."""
    if score < p.best_elbo - 1e-6:
        p.best_elbo, p.best_step = score, p.step
        return True
    return False


def plateau(p: Progress, t) -> str | None:
    """Bowman et al.'s schedule: after more than ``lr_patience`` evaluations without improvement,
    "decay" the learning rate, or "stop" once ``max_decays`` decays did not help; else None."""
    if not (t.max_decays and p.bad_evals > t.lr_patience):
        return None
    p.bad_evals = 0
    return "stop" if p.decays >= t.max_decays else "decay"


def decay_lr(optimizer, p: Progress, t) -> None:
    """Multiply every learning rate by ``train.lr_decay`` (not below ``train.min_lr``)."""
    p.decays += 1
    for g in optimizer.param_groups:
        g["lr"] = max(t.min_lr, g["lr"] * t.lr_decay)


def make_optimizer(t, params) -> torch.optim.Optimizer:
    """Adam or SGD; the fused (single-kernel) implementation where this torch has one for the
    device (about 15% faster per step on a 2-core CPU for PTB-sized models), else the default."""
    params = list(params)
    kind, kwargs = {"adam": (torch.optim.Adam, {"weight_decay": t.weight_decay}),
                    "sgd": (torch.optim.SGD, {"momentum": t.momentum, "weight_decay": t.weight_decay})}[t.optimizer]
    try:
        return kind(params, lr=t.lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return kind(params, lr=t.lr, **kwargs)
