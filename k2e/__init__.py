"""k2e core: schemas, the documented rules, the job store, storage layout and settings.

Imported by both ``service`` (the API) and ``worker`` (Celery + TensorFlow); imports neither.
"""
