"""Failure drills: PostgreSQL restarted under ingest, Redis stopped under a live tail, a soak.

Run by hand, never in CI:

    uv run python -m bench.drills [--keep] [--ref COMMIT] postgres-restart [--outage 20] [--stop-mode fast|immediate]
    uv run python -m bench.drills [--keep] [--ref COMMIT] redis-stop [--outage 30] [--how stop|pause]
    uv run python -m bench.drills [--keep] [--ref COMMIT] soak [--minutes 10]

Each drill starts its own PostgreSQL (initdb into a temporary directory, as the `postgres` user when
run as root) and its own Redis on free ports, and `lodge serve` as a separate process against them;
the machine's shared servers (5432, 6379) are never touched. Everything is stopped and the directory
removed at the end, even on failure (`--keep` keeps it, with the server logs). `--ref` runs Lodge
from `git archive COMMIT` rather than the working tree. The drill prints a Markdown report and exits
1 when a check failed. Results are recorded in docs/operations.md.

The modules: cluster.py (our own PostgreSQL, Redis and Lodge), load.py (the clients: ingest, probes,
live tails, each request recorded), report.py (tables, checks, Lodge's log), one module per drill
(postgres_restart.py, redis_stop.py, soak.py) and __main__.py (the command line).
"""
