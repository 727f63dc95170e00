"""The only import of the TFLite interpreter in the project.

LiteRT (`ai_edge_litert`) is the maintained successor of `tflite-runtime` with wheels for newer
Pythons and numpy 2; when it is installed it wins, so moving runtimes is a requirements change.
"""

from __future__ import annotations

try:  # pragma: no cover - depends on which runtime is installed
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover
    from tflite_runtime.interpreter import Interpreter

__all__ = ["Interpreter"]
