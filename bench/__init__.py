"""Benchmarks for arctic-serve: `make bench SUITE=...`; results in bench/results/."""
