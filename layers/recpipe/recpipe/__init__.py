"""recpipe: real-time recommendation pipeline (domain, adapters, training, local stack)."""

__version__ = "0.1.0"
