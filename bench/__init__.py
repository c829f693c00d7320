"""k2e benchmarks: `make bench` (python -m bench.run)."""
