"""Load generation and benchmarks for resfam-serve (`python -m loadtests <scenario>`)."""
