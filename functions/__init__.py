"""Thin Azure Functions adapters: trigger in, one core call, nothing else."""
