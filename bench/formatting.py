"""How the bench's reports write their numbers: sizes, spreads, lists."""

import statistics

MB = 1024 * 1024


def half_spread(values: list[float]) -> float:
    """Half the range, as a percentage of the median."""
    return (max(values) - min(values)) / 2 / statistics.median(values) * 100


def spread_of(values: list[float], unit: str = "", digits: int = 0) -> str:
    low, high = min(values), max(values)
    suffix = f" {unit}" if unit else ""
    return f"{low:.{digits}f}-{high:.{digits}f}{suffix}, ±{half_spread(values):.0f}%"


def joined(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)
