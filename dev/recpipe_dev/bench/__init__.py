"""Benchmarks behind `recpipe bench serving|stream|retrain`. Each module exposes
`add_arguments(parser)` and `run(args) -> int` and prints p50/p95/p99 and throughput."""
