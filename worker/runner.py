"""This worker process's JobRunner, built on first use (which imports TensorFlow)."""

from functools import lru_cache
from typing import TYPE_CHECKING

from k2e.settings import get_settings

if TYPE_CHECKING:
    from worker.training import JobRunner


@lru_cache(maxsize=1)
def runner() -> "JobRunner":
    """This process's JobRunner; the first call imports TensorFlow."""
    from worker.training import JobRunner

    return JobRunner(get_settings())
