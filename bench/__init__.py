"""The benchmarks behind every performance figure in the README (run ``python -m bench``)."""
