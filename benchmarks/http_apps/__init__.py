"""The minimal apps ``benchmarks.http_bench`` serves with uvicorn, one per way of queueing.

Each has the same ``POST /register`` (a pydantic ``{email, name}`` body, 202 with a small JSON
answer) and ``GET /health`` for the harness to know the server is up; only the call that
queues the welcome work differs. They read their settings from ``HTTP_BENCH_*`` variables,
which the harness sets.
"""
