"""The Ranker: the bundle's ranker.tflite scoring every candidate in one invoke.

Resizing an input and re-allocating tensors costs far more than the tiny MLP itself, so one
interpreter is kept per size bucket (powers of two), allocated once; a request pads its rows up
to the bucket and reads back the first n scores.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.domain.features import N_FEATURES
from recpipe.tflite import Interpreter

MIN_BUCKET = 16
SMOKE_ROWS = 8


class RankerError(Exception):
    """The model cannot be used: unreadable, wrong signature or non-finite output."""


def bucket_of(n: int) -> int:
    b = MIN_BUCKET
    while b < n:
        b *= 2
    return b


class _Slot:
    """One interpreter allocated for `size` rows."""

    __slots__ = ("input_index", "interpreter", "lock", "output_index", "size")

    def __init__(self, model: bytes, size: int) -> None:
        self.interpreter: Any = Interpreter(model_content=model, num_threads=1)
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise RankerError(f"ranker must have one input and one output, has {len(inp)}/{len(out)}")
        shape = list(inp[0]["shape"])
        if len(shape) != 2 or int(shape[1]) != N_FEATURES:
            raise RankerError(f"ranker input shape {shape} does not take {N_FEATURES} features")
        if inp[0]["dtype"] != np.float32:
            raise RankerError(f"ranker input dtype is {inp[0]['dtype']}, expected float32")
        self.input_index = int(inp[0]["index"])
        self.output_index = int(out[0]["index"])
        self.interpreter.resize_tensor_input(self.input_index, [size, N_FEATURES], strict=False)
        self.interpreter.allocate_tensors()
        self.size = size
        self.lock = threading.Lock()


class Ranker:
    def __init__(self, model: bytes, *, version: str = "") -> None:
        self.model = model
        self.version = version
        self._slots: dict[int, _Slot] = {}
        self._slots_lock = threading.Lock()
        try:
            self._slot(MIN_BUCKET)
        except RankerError:
            raise
        except Exception as exc:  # the runtime raises ValueError/RuntimeError on bad flatbuffers
            raise RankerError(f"ranker model cannot be loaded: {exc}") from None

    @classmethod
    def from_file(cls, path: Path, *, version: str = "") -> Ranker:
        try:
            return cls(path.read_bytes(), version=version)
        except OSError as exc:
            raise RankerError(f"cannot read {path}: {exc}") from None

    def _slot(self, size: int) -> _Slot:
        slot = self._slots.get(size)
        if slot is None:
            with self._slots_lock:
                slot = self._slots.get(size)
                if slot is None:
                    slot = self._slots[size] = _Slot(self.model, size)
        return slot

    def score(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One score per row of the [n, N_FEATURES] feature matrix."""
        n = len(x)
        if n == 0:
            return np.zeros(0, np.float32)
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise RankerError(f"feature matrix has shape {x.shape}, expected [n, {N_FEATURES}]")
        slot = self._slot(bucket_of(n))
        with slot.lock:
            interp = slot.interpreter
            if n == slot.size:
                interp.set_tensor(slot.input_index, np.ascontiguousarray(x, np.float32))
            else:
                padded = np.zeros((slot.size, N_FEATURES), np.float32)
                padded[:n] = x
                interp.set_tensor(slot.input_index, padded)
            interp.invoke()
            out = interp.get_tensor(slot.output_index)
        return np.asarray(out, np.float32).reshape(slot.size, -1)[:n, 0].copy()

    def smoke_test(self, x: npt.NDArray[np.float32] | None = None) -> None:
        """Refuse a model whose output has the wrong shape or is not finite."""
        if x is None:
            rng = np.random.default_rng(0)
            x = rng.random((SMOKE_ROWS, N_FEATURES), dtype=np.float32)
        try:
            scores = self.score(x)
        except RankerError:
            raise
        except Exception as exc:
            raise RankerError(f"smoke inference failed: {exc}") from None
        if scores.shape != (len(x),):
            raise RankerError(f"smoke inference returned shape {scores.shape} for {len(x)} rows")
        if not np.all(np.isfinite(scores)):
            raise RankerError("smoke inference returned non-finite scores")

    def warm(self, sizes: tuple[int, ...]) -> None:
        """Allocate the buckets a container will use before the first request needs them."""
        for n in sizes:
            self._slot(bucket_of(n))
