"""The `lodge` command: serve, migrate, export-schema, persisted-operations, create-user."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

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

    url = _database_url(Settings())
    if args.action == "upgrade":
        asyncio.run(migrate.upgrade(url, args.revision or "head"))
    elif args.action == "downgrade":
        if not args.revision:
            print("lodge migrate downgrade needs a revision (or `base`)", file=sys.stderr)
            return 2
        asyncio.run(migrate.downgrade(url, args.revision))
    else:
        migrate.current(url)
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
    registry = Registry.from_directory(directory)
    sys.stdout.write(json.dumps(registry.manifest(), indent=2, sort_keys=True) + "\n")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from app.accounts import roles, service
    from app.api.errors import LodgeError
    from app.db import create_database

    settings = Settings()

    async def run() -> None:
        db = create_database(_database_url(settings), settings)
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

    try:
        asyncio.run(run())
    except LodgeError as exc:
        print(f"lodge create-user: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
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
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
