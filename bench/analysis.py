"""RESULTS.md's prose: where each figure's time goes, from this run's own probes."""

from typing import Any

from bench.service_analysis import (
    api_attribution,
    downloads_attribution,
    fairness_attribution,
    memory_attribution,
)
from bench.training_analysis import e2e_attribution, throughput_attribution


def analysis(r: dict[str, Any]) -> list[str]:
    lines = ["## Where the time goes (k2e's part, TensorFlow's part, fixes)", ""]
    for part in (
        e2e_attribution,
        throughput_attribution,
        api_attribution,
        memory_attribution,
        downloads_attribution,
        fairness_attribution,
    ):
        lines += part(r)
    return lines
