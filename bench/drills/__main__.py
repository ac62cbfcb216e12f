"""`python -m bench.drills <drill>`: the command line."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from bench import drills
from bench.drills import postgres_restart, redis_stop, soak

DRILLS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "postgres-restart": postgres_restart.run,
    "redis-stop": redis_stop.run,
    "soak": soak.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drills", description=(drills.__doc__ or "").split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    parser.add_argument("--ref", help="run Lodge from `git archive REF` instead of the working tree")
    sub = parser.add_subparsers(dest="drill", required=True)
    pg = sub.add_parser("postgres-restart", help="PostgreSQL stopped and started again under steady ingest")
    pg.add_argument("--outage", type=float, default=20, help="seconds PostgreSQL stays down")
    pg.add_argument("--stop-mode", choices=["fast", "immediate"], default="fast", help="pg_ctl stop -m")
    redis = sub.add_parser("redis-stop", help="Redis stopped under a live tail")
    redis.add_argument("--outage", type=float, default=30, help="seconds Redis stays down")
    redis.add_argument("--subscribers", type=int, default=3)
    redis.add_argument("--how", choices=["stop", "pause"], default="stop", help="stop Redis, or freeze it (SIGSTOP)")
    for p in (pg, redis):
        p.add_argument("--warmup", type=float, default=10, help="seconds of load before the outage")
        p.add_argument("--after", type=float, default=20, help="seconds of load after the outage")
    soak_ = sub.add_parser("soak", help="steady mixed load; RSS, DB connections and sockets over time")
    soak_.add_argument("--minutes", type=float, default=10)
    soak_.add_argument("--subscribers", type=int, default=4)
    args = parser.parse_args(argv)
    return asyncio.run(DRILLS[args.drill](args))


if __name__ == "__main__":
    raise SystemExit(main())
