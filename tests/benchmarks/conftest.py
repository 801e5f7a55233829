"""The benchmarks are scripts run by hand (python tests/benchmarks/run.py), not tests."""

collect_ignore_glob = ["*.py"]
