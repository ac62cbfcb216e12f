"""The `lodge` command: serve, migrate, export-schema, persisted-operations, create-user."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from pydantic import ValidationError

from app.observability.logs import configure_logging
from app.settings import Settings

log = logging.getLogger("lodge")


def _database_url(settings: Settings) -> str:
    from app.db import resolve_database_url

    return resolve_database_url(settings)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app import migrate

    settings = Settings()
    if args.workers > 1 and settings.broadcast_url.startswith("memory"):
        print(
            "lodge serve: --workers > 1 needs BROADCAST_URL=redis://...; with memory:// a log ingested "
            "by one worker never reaches the subscribers of another",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and settings.metrics_enabled and settings.metrics_port is not None:
        print(
            "lodge serve: LODGE_METRICS_PORT serves one process's metrics; with --workers > 1 run one "
            "process per container (replicas) instead, or leave the port unset",
            file=sys.stderr,
        )
        return 2
    url = _database_url(settings)
    # Workers (and --reload) import the app anew: hand them the resolved database rather than
    # letting each one start or look for the embedded server.
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", settings.resolved_secret_key())
    if settings.migrate_on_start and not args.no_migrate:
        asyncio.run(migrate.upgrade(url))
    if args.demo:
        from app.demo import load_demo

        asyncio.run(load_demo(settings, url))
    print(f"Lodge: GraphiQL at http://{args.host}:{args.port}/graphql", flush=True)
    # uvicorn drains on SIGTERM, then raises the signal again; with the default action the process
    # would die there, skipping the atexit hook that stops the embedded PostgreSQL. Exit instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(
        "app.main:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=None if args.reload else args.workers,
        reload=args.reload,
        log_level=settings.log_level.lower(),
        # Lodge's handlers (JSON or text) format uvicorn's records too; its access log repeats ours.
        log_config=None,
        access_log=False,
        # SIGTERM: stop accepting, let requests in flight finish for this long, close websockets
        # with 1012 (service restart: clients reconnect), then shut down; the embedded PostgreSQL last.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        ws="websockets-sansio",
        ws_per_message_deflate=settings.websocket_compression,
        ws_max_size=settings.max_body_bytes,
    )
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_migrate(args: argparse.Namespace) -> int:
    from app import migrate

    if args.action == "downgrade" and not args.revision:
        print("lodge migrate downgrade needs a revision (or `base`)", file=sys.stderr)
        return 2
    url = _database_url(Settings())
    if args.action == "upgrade":
        asyncio.run(migrate.upgrade(url, args.revision or "head"))
    elif args.action == "downgrade":
        asyncio.run(migrate.downgrade(url, args.revision))
    else:
        current, head = asyncio.run(migrate.current(url)), migrate.head()
        if current is None:
            print(f"no migrations applied (the newest is {head}): run `lodge migrate`")
        elif current == head:
            print(f"at {current}, the newest")
        else:
            print(f"at {current}; the newest is {head}: run `lodge migrate`")
    return 0


def cmd_export_schema(args: argparse.Namespace) -> int:
    from app.api.schema import create_schema

    text = create_schema().as_str() + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_persisted_operations(args: argparse.Namespace) -> int:
    import json

    from app.api.persisted import Registry

    directory = Path(args.dir) if args.dir else Settings().persisted_operations_dir
    if directory is None or not directory.is_dir():
        print(f"lodge persisted-operations: {directory} is not a directory", file=sys.stderr)
        return 2
    registry = Registry.from_directory(directory)
    sys.stdout.write(json.dumps(registry.manifest(), indent=2, sort_keys=True) + "\n")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from app import migrate
    from app.accounts import roles, service
    from app.db import create_database

    settings = Settings()
    url = _database_url(settings)

    async def run() -> None:
        # Like `serve`: a fresh data directory (or database) has no tables until it is migrated.
        if settings.migrate_on_start:
            await migrate.upgrade(url)
        db = create_database(url, settings)
        try:
            async with db.sessionmaker() as session:
                user = await service.create_user(session, email=args.email, password=args.password, name=args.name)
                if args.admin:
                    role = await roles.ensure_superuser_role(session)
                    await roles.assign_role(session, user_id=user.id, role_id=role.id, assigned_by=None)
                await session.commit()
            print(f"created {'superuser' if args.admin else 'user'} {user.id} <{user.email}>")
        finally:
            await db.dispose()

    asyncio.run(run())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lodge", description="Lodge GraphQL server")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (embedded PostgreSQL unless DATABASE_URL is set)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations on start")
    serve.add_argument("--demo", action="store_true", help="load a small demo data set first")
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="apply or inspect database migrations")
    mig.add_argument("action", choices=["upgrade", "downgrade", "current"], nargs="?", default="upgrade")
    mig.add_argument("revision", nargs="?")
    mig.set_defaults(func=cmd_migrate)

    exp = sub.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    exp.add_argument("--output", "-o")
    exp.set_defaults(func=cmd_export_schema)

    per = sub.add_parser(
        "persisted-operations", help="print the registered operations as JSON: {sha256: {name, document}}"
    )
    per.add_argument("--dir", help="where the .graphql documents are (default: LODGE_PERSISTED_OPERATIONS_DIR)")
    per.set_defaults(func=cmd_persisted_operations)

    cu = sub.add_parser("create-user", help="create a user with email and password")
    cu.add_argument("--email", required=True)
    cu.add_argument("--password", required=True)
    cu.add_argument("--name")
    cu.add_argument("--admin", action="store_true", help="give the user the `admin` role (permission `*`)")
    cu.set_defaults(func=cmd_create_user)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"lodge {args.command}: invalid configuration: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    # The embedded PostgreSQL's platformdirs warns on every command where XDG_RUNTIME_DIR is unset
    # (containers, CI): noise to a newcomer, and harmless (it falls back to /tmp).
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # One clear line, never a traceback: the traceback goes to the log at DEBUG (LOG_LEVEL=DEBUG).
        log.debug("lodge %s failed", args.command, exc_info=True)
        print(f"lodge {args.command}: {describe_failure(exc)}", file=sys.stderr)
        return 1


def describe_failure(exc: BaseException) -> str:
    """A command's failure as one line a newcomer can act on."""
    from sqlalchemy.exc import DBAPIError

    from app.api.errors import LodgeError

    if isinstance(exc, LodgeError):
        return f"{exc.message} ({exc.code})"
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"the database refused: {_one_line(exc.orig)}"
    if isinstance(exc, ConnectionError | TimeoutError) or (isinstance(exc, OSError) and exc.filename is None):
        return f"cannot reach the database ({_one_line(exc)}): is it running, and is DATABASE_URL right?"
    if isinstance(exc, OSError):
        return _one_line(exc)
    return f"{type(exc).__name__}: {_one_line(exc)} (LOG_LEVEL=DEBUG shows the traceback)"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


if __name__ == "__main__":
    raise SystemExit(main())
