"""k2e's Celery worker: the only part of k2e that imports TensorFlow."""
