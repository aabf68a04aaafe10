"""Resumable evaluation: the running sums of one pass of :func:`textvae.metrics.evaluate` over a
split, saved every minute or so, so that an interrupted pass (k = 500 importance samples over PTB's
test split take an hour on a CPU thread) goes on from its last save and ends with the numbers an
uninterrupted pass gives, to the last bit.

The state is one safetensors file: the tensors (sums, the posterior rows filled so far, the state of
the noise generator) and, in its metadata, JSON (batches done, the texts decoded so far for BLEU,
and the key of the pass). A saved state is continued only when its key matches: the same model
weights, split, device type, importance samples, seed and batching; the state of another pass is
overwritten, with a message, and a file that holds no saved evaluation is refused and left alone.
Nothing is unpickled.
"""

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FORMAT = 2  # raised whenever what a pass computes changes, so a pass saved by older code is started afresh


@dataclass
class PassState:
    """What a pass of evaluate has added up after ``done`` batches."""

    mu: torch.Tensor  # (N, Z) posterior means, rows of the batches done
    logvar: torch.Tensor  # (N, Z)
    kl_dim: torch.Tensor  # (Z,) float64: KL per dimension summed over sentences
    rec_sum: float = 0.0
    nll_sum: float = 0.0
    tokens: int = 0
    done: int = 0
    seconds: float = 0.0  # time the pass has taken to reach this state, over all its sittings
    batches: int = 0  # the pass's number of batches (what ``done`` counts towards)
    hyps: list = field(default_factory=list)  # greedy reconstructions (BLEU)
    refs: list = field(default_factory=list)

    @classmethod
    def fresh(cls, n: int, z: int) -> "PassState":
        return cls(mu=torch.zeros(n, z), logvar=torch.zeros(n, z), kl_dim=torch.zeros(z, dtype=torch.float64))


def pass_key(model, split, **settings) -> dict:
    """What identifies a pass: a digest of the model's weights and of the split's token ids (and label
    ids), the device type (a GPU draws and chunks differently) and ``settings`` (importance samples,
    seed, batch size, ...)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    ids = hashlib.sha256()
    for seq in split.ids:
        ids.update(np.asarray(seq, dtype=np.int64).tobytes())
        ids.update(b"|")
    if split.label_ids is not None:  # what a conditional model is conditioned on
        ids.update(np.asarray(split.label_ids, dtype=np.int64).tobytes())
    return {"format": FORMAT, "model": h.hexdigest(), "split": ids.hexdigest(), "sentences": len(split.ids),
            "device": model.device.type, **settings}


class PassCheckpoint:
    """Saves and restores a :class:`PassState` and the pass's noise generator at ``path``.

    ``restore`` fills a fresh state from the file when its key matches (returns True); ``maybe_save``
    writes the state when ``every`` seconds have passed since the last write (atomically: a crash
    while saving leaves the previous save); ``clear`` removes the file once the pass is complete."""

    def __init__(self, path: str | Path, key: dict, every: float = 60.0, log=None):
        self.path, self.key, self.every = Path(path), key, every
        self.log = log or (lambda msg: None)
        self._last = time.monotonic()

    def restore(self, state: PassState, generator: torch.Generator) -> bool:
        """Fill ``state`` and ``generator`` from the file when it holds this pass (True). A saved
        evaluation of another pass is replaced (False); a file that is not a saved evaluation is a
        CheckpointError, left untouched: the pass would overwrite it and remove it at the end."""
        from safetensors import SafetensorError, safe_open

        if not self.path.exists():
            return False
        try:
            with safe_open(str(self.path), framework="pt") as f:
                saved = (f.metadata() or {}).get("textvae_pass")
                meta = json.loads(saved) if saved is not None else None
                if isinstance(meta, dict) and meta.get("key") == self.key:
                    tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, TypeError, ValueError) as e:
            raise self._not_a_pass(f"unreadable: {' '.join(str(e).split())[:200]}") from None
        if not isinstance(meta, dict):
            raise self._not_a_pass("no saved evaluation in it")
        if meta.get("key") != self.key:
            self.log(f"{self.path}: a saved evaluation of another pass (model, split or settings "
                     f"differ); starting this one afresh")
            return False
        state.mu.copy_(tensors["mu"])
        state.logvar.copy_(tensors["logvar"])
        state.kl_dim.copy_(tensors["kl_dim"])
        state.rec_sum, state.nll_sum = float(tensors["rec_sum"]), float(tensors["nll_sum"])
        state.tokens, state.done, state.seconds = meta["tokens"], meta["done"], meta.get("seconds", 0.0)
        state.hyps, state.refs = meta["hyps"], meta["refs"]
        generator.set_state(tensors["generator"])
        self.log(f"{self.path}: continuing a saved evaluation after {state.done} batches")
        return True

    def _not_a_pass(self, why: str):
        from .errors import CheckpointError

        return CheckpointError(f"{self.path} is not a saved evaluation ({why}); a resumable pass overwrites its "
                               f"file and removes it when done, so this one is left alone: give another resume "
                               f"file (--resume-file), or delete it if it is a damaged saved evaluation")

    def maybe_save(self, state: PassState, generator: torch.Generator) -> None:
        if time.monotonic() - self._last >= self.every:
            self.save(state, generator)

    def save(self, state: PassState, generator: torch.Generator) -> None:
        from safetensors.torch import save

        from .checkpoint import atomic_write

        meta = {"key": self.key, "done": state.done, "batches": state.batches, "tokens": state.tokens,
                "seconds": state.seconds, "hyps": state.hyps, "refs": state.refs}
        tensors = {"mu": state.mu, "logvar": state.logvar, "kl_dim": state.kl_dim,
                   "rec_sum": torch.tensor(state.rec_sum, dtype=torch.float64),
                   "nll_sum": torch.tensor(state.nll_sum, dtype=torch.float64), "generator": generator.get_state()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, save(tensors, metadata={"textvae_pass": json.dumps(meta)}))
        self._last = time.monotonic()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def saved_progress(path: str | Path) -> dict | None:
    """What a saved pass at ``path`` has done, without loading its tensors: ``done`` batches of
    ``batches`` (0 when the file predates that field) and ``seconds``; None when there is no readable one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["textvae_pass"])
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
    return {"done": meta.get("done", 0), "batches": meta.get("batches", 0), "seconds": meta.get("seconds", 0.0)}
