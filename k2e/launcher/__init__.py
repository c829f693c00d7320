"""Local-run tooling, not part of the service: ``k2e run`` (``python -m k2e.launcher``,
``make run``) starts an embedded Redis when ``REDIS_URL`` is unset, the API and one worker."""
