"""Local-run tooling, not part of the service: ``python -m launcher`` (``make run``) starts
an embedded Redis when ``REDIS_URL`` is unset, the API and one worker."""
