"""Where the checkout under test is."""

from pathlib import Path

# The repository's root: processes the tests start run there, as `make run` does.
ROOT = Path(__file__).resolve().parents[2]
