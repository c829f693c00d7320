"""The one place k2e imports TensorFlow. Imported when a worker process starts."""

import os

# Quiet C++ start-up chatter; the worker's own logs say what matters.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import tensorflow as tf  # noqa: E402

__all__ = ["tf"]
