"""The servers workload 1 measures, each a separate process driven over stdin (see control.py)."""
