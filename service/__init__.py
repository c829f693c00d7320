"""The k2e REST API. Never imports TensorFlow or ``worker``."""
