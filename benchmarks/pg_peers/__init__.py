"""procrastinate's side of ``benchmarks.postgres_bench``, run in ``benchmarks/pg_peers/.venv``."""
