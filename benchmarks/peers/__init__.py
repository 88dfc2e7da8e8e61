"""Other task queues run through the compare workloads (see benchmarks/compare.py)."""
