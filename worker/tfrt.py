"""The one place k2e imports TensorFlow. Imported when a worker process starts."""

import os

# Quiet C++ start-up chatter; the worker's own logs say what matters.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import tensorflow as tf  # noqa: E402

# TensorFlow 2.15's public API can only enable op determinism; the module it comes from
# also reads and disables it, which a worker running job after job needs.
from tensorflow.python.framework import config as tf_config  # noqa: E402

__all__ = ["tf", "tf_config"]
