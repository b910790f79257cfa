"""Benchmarks (`make bench`): the sweep against the serial pipeline, chain throughput, cold start."""
