"""SIGINT and SIGTERM as a request to stop: raised at once outside the training loop, deferred to
the loop's safe points inside it, never lost."""

import contextlib
import signal
import threading


class StopSignals:
    """SIGINT and SIGTERM as a request to stop, for the ``with`` block it guards (nestable; main thread only).

    With ``defer=False`` (start-up, data preparation, the end-of-run summary) the handler raises
    KeyboardInterrupt at once, naming the signal and ``phase``. With ``defer=True`` (the training loop) it
    records the signal in ``received``; the loop checks it at its safe points (after a step, a validation,
    a checkpoint) and stops there, and a signal the loop has not acted on when the block ends raises
    KeyboardInterrupt then, so that none is lost. The previous handlers are restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, phase: str, defer: bool = False):
        self.phase, self.defer, self.received, self.handled, self._previous = phase, defer, None, False, {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _on_signal(self, signum, frame) -> None:
        self.received = signum
        if not self.defer:
            self.handled = True
            raise KeyboardInterrupt(f"{self.name} received during {self.phase}")

    @contextlib.contextmanager
    def deferred(self):
        """A block that must not be cut in the middle (adding a finished batch to running sums): a signal
        received inside it raises KeyboardInterrupt when the block ends (left to the guard's safe points
        when the guard defers anyway)."""
        before, self.defer = self.defer, True
        try:
            yield
        finally:
            self.defer = before
        if not before and self.received is not None and not self.handled:
            self.handled = True
            raise KeyboardInterrupt(f"{self.name} received during {self.phase}")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        return self

    def __exit__(self, kind, error, tb) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if kind is None and self.received is not None and not self.handled:
            raise KeyboardInterrupt(f"{self.name} received during {self.phase}")
