"""Bounds every dataset reader (k2e/formats) keeps, whatever a file declares.

A reader is given a ``ReadLimits`` explicitly (the API's inspection sandbox and the worker
build one from their settings); a file that passes one is refused with an
``InvalidUpload`` naming the setting, before the reader allocates what the file declares.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the inspection sandbox's child never needs pydantic-settings
    from k2e.settings import Settings

# Inflation below this many bytes is never refused for its ratio alone: tiny files
# (headers, a few zero rows) compress far better than any real dataset.
RATIO_FLOOR_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ReadLimits:
    max_record_bytes: int = 64 * 1024**2
    max_inflated_bytes: int = 16 * 1024**3
    max_inflation_ratio: float = 200.0
    max_csv_columns: int = 10_000
    max_csv_field_bytes: int = 1024**2

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ReadLimits":
        return cls(
            max_record_bytes=settings.max_record_bytes,
            max_inflated_bytes=settings.max_inflated_bytes,
            max_inflation_ratio=settings.max_inflation_ratio,
            max_csv_columns=settings.max_csv_columns,
            max_csv_field_bytes=settings.max_csv_field_bytes,
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "max_record_bytes": self.max_record_bytes,
            "max_inflated_bytes": self.max_inflated_bytes,
            "max_inflation_ratio": self.max_inflation_ratio,
            "max_csv_columns": self.max_csv_columns,
            "max_csv_field_bytes": self.max_csv_field_bytes,
        }

    @property
    def max_csv_line_chars(self) -> int:
        """The longest physical CSV line read: one field at its limit plus a column of
        32 characters for every other column allowed."""
        return self.max_csv_field_bytes + 32 * self.max_csv_columns

    def check_inflation(self, inflated: int, compressed: int, what: str) -> None:
        """Refuse ``inflated`` bytes out of ``compressed`` ones past either bound."""
        from k2e.errors import InvalidUpload

        if inflated > self.max_inflated_bytes:
            raise InvalidUpload(
                f"{what} inflates past {self.max_inflated_bytes} bytes "
                f"(K2E_MAX_INFLATED_BYTES); refused"
            )
        if inflated > RATIO_FLOOR_BYTES and inflated > self.max_inflation_ratio * max(
            compressed, 1
        ):
            raise InvalidUpload(
                f"{what} inflates more than {self.max_inflation_ratio:g} times "
                f"(K2E_MAX_INFLATION_RATIO: {inflated} bytes out of {compressed}); refused"
            )
