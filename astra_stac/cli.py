"""The `astra-stac` command: serve, ingest, db migrate, keys create/list/revoke."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from astra_stac import __version__
from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.db.dsn import configured_dsn
from astra_stac.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, running_cluster
from astra_stac.db.migrate import migrate
from astra_stac.errors import AstraError
from astra_stac.settings import ApiSettings, ServeSettings

DEMO_KEY_NAME = "demo"
DEMO_SCENE = "earth-search:S2A_13TDE_20231008_0_L2A"


def default_data_dir() -> Path:
    """Where the embedded database and local storage live unless told otherwise."""
    configured = ServeSettings().data_dir
    if configured:
        return configured
    if os.geteuid() == 0:
        return Path("/var/lib/astra-stac")
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "astra-stac"


@contextmanager
def database(data_dir: Path | None) -> Iterator[str]:
    """A DSN: the configured database, or the embedded one under `data_dir`
    (started for the block when `serve` is not already running it)."""
    dsn = configured_dsn()
    if dsn is not None:
        yield dsn
        return
    with running_cluster(data_dir or default_data_dir()) as cluster:
        yield cluster.dsn()


def _cmd_migrate(args: argparse.Namespace) -> int:
    with database(args.data_dir) as dsn:
        pgstac_version, applied = migrate(dsn)
    print(f"pgstac {pgstac_version}; astra migrations applied: {', '.join(applied) or 'none'}")
    return 0


def _comma_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()] or None


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from astra_stac.providers import load_registry

    providers = _comma_list(args.providers)
    registry = load_registry(ApiSettings().providers_file)
    unknown = sorted(set(providers or ()) - set(registry.providers))
    if unknown:
        known = ", ".join(registry.providers)
        print(
            f"astra-stac: unknown provider(s) {', '.join(unknown)}; known: {known}", file=sys.stderr
        )
        return 2
    with database(args.data_dir) as dsn:
        migrate(dsn)
        new, stored = store.create_key(
            dsn, args.name, Scope[args.scope], providers, _comma_list(args.collections)
        )
    limits = [
        f"providers {', '.join(stored.providers)}" if stored.providers else "",
        f"collections {', '.join(stored.collections)}" if stored.collections else "",
    ]
    limited = " and ".join(x for x in limits if x)
    print(
        f"Created {stored.scope.name} key {stored.name!r}"
        f"{' limited to ' + limited if limited else ''}. It is shown once; store it now:"
    )
    print(new.secret)
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    with database(args.data_dir) as dsn:
        keys = store.list_keys(dsn)
    print(
        f"{'NAME':<24} {'KEY':<24} {'SCOPE':<6} {'CREATED':<17} {'LAST USED':<17} "
        f"{'STATUS':<8} LIMITED TO"
    )
    for key in keys:
        created = key.created_at.strftime("%Y-%m-%d %H:%M") if key.created_at else "-"
        used = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never"
        status = "revoked" if key.revoked_at else "live"
        shown = f"astra_sk_live_{key.lookup_id}…"
        limited = ",".join((key.providers or ()) + (key.collections or ())) or "-"
        print(
            f"{key.name:<24} {shown:<24} {key.scope.name:<6} {created:<17} {used:<17} "
            f"{status:<8} {limited}"
        )
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    with database(args.data_dir) as dsn:
        key = store.revoke_key(dsn, args.name_or_prefix)
    print(f"Revoked key {key.name!r} (astra_sk_live_{key.lookup_id}…).")
    return 0


def _bbox(value: str) -> list[float]:
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (4, 6):
        raise argparse.ArgumentTypeError("expected west,south,east,north")
    return numbers


def _header(value: str) -> tuple[str, str]:
    name, sep, content = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError("expected 'Name: value'")
    return name.strip(), content.strip()


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _cmd_ingest(args: argparse.Namespace) -> int:
    from astra_stac.ingest.console import run_ingest
    from astra_stac.ingest.pipeline import IngestOptions
    from astra_stac.ingest.sources import ApiQuery, SourceOptions
    from astra_stac.providers import load_registry

    registry = load_registry(ApiSettings().providers_file)
    if args.provider and args.provider not in registry.providers:
        known = ", ".join(registry.providers)
        print(f"astra-stac: unknown provider {args.provider!r}; known: {known}", file=sys.stderr)
        return 2
    query = ApiQuery(
        collections=_comma_list(args.collections),
        bbox=args.bbox,
        datetime=args.datetime,
        filter=args.filter,
        max_items=args.max_items,
        page_size=args.page_size,
    )
    options = IngestOptions(
        provider=args.provider, dry_run=args.dry_run, batch_size=args.batch_size
    )
    with database(args.data_dir) as dsn:
        if not args.dry_run:
            migrate(dsn)
        return run_ingest(
            dsn,
            registry,
            args.sources,
            options,
            SourceOptions(query=query, headers=dict(args.header or [])),
            as_json=args.json,
        )


def _load_demo(dsn: str, data_dir: Path) -> str:
    from astra_stac.demo import load_demo
    from astra_stac.providers import load_registry

    count = load_demo(dsn, load_registry(ApiSettings().providers_file), data_dir / "storage")
    print(f"Loaded {count} demo scenes.")
    for key in store.list_keys(dsn):
        if key.name == DEMO_KEY_NAME and key.revoked_at is None:
            store.revoke_key(dsn, DEMO_KEY_NAME)
    new, _ = store.create_key(dsn, DEMO_KEY_NAME, Scope.read)
    return new.secret


def _quiet_stac_fastapi_defaults() -> None:
    """stac-fastapi builds a settings object when imported and warns about its
    default titles; the app passes its own, so give that one ours as well."""
    os.environ.setdefault("STAC_FASTAPI_TITLE", "astra-stac")
    os.environ.setdefault("STAC_FASTAPI_DESCRIPTION", ApiSettings().api_description)
    os.environ.setdefault("STAC_FASTAPI_LANDING_ID", "astra-stac")
    os.environ.setdefault("STAC_FASTAPI_VERSION", __version__)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    serve = ServeSettings()
    host = args.host or serve.host
    port = args.port or serve.port
    data_dir = (args.data_dir or default_data_dir()).resolve()
    dsn = configured_dsn()
    cluster, started_here = None, False
    if dsn is None:
        cluster = EmbeddedPostgres(data_dir)
        started_here = not cluster.running()
        cluster.start()
        dsn = cluster.dsn()
        print(f"Embedded PostgreSQL on 127.0.0.1:{cluster.port} (data in {data_dir})")
    # SIGTERM is a request to stop: uvicorn finishes the requests in flight, then re-raises
    # the signal; ending here instead of dying of it stops the embedded PostgreSQL and exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        migrate(dsn)
        demo_key = _load_demo(dsn, data_dir) if args.demo else None
        os.environ["ASTRA_DATABASE_URL"] = dsn
        _quiet_stac_fastapi_defaults()
        # The asset resolver serves (and caches conversions) from where the demo files are.
        os.environ.setdefault("ASTRA_STORAGE_ROOT", str(data_dir / "storage"))
        base = f"http://{host}:{port}/api/v1"
        if demo_key:
            print("\nAPI key (read scope, shown once):")
            print(f"  {demo_key}")
            print("Try it:")
            print(f'  curl -H "Authorization: Bearer {demo_key}" {base}/scenes/{DEMO_SCENE}')
        print(f"\nServing {base} (OpenAPI docs at {base}/api.html); Ctrl-C stops.\n", flush=True)
        uvicorn.run(
            "astra_stac.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=args.workers or serve.workers,
            log_level=ApiSettings().log_level,
            log_config=None,  # the app logs JSON lines itself (ASTRA_JSON_LOGS)
            timeout_graceful_shutdown=10,
        )
    finally:
        if cluster is not None and started_here:
            cluster.stop()
            print("Embedded PostgreSQL stopped.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astra-stac", description=__doc__)
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir",
        type=Path,
        help="embedded PostgreSQL and local storage (used when ASTRA_DATABASE_URL/PG* are unset)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[data_dir], help="serve the API")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--demo", action="store_true", help="load demo scenes and print a key")
    serve.set_defaults(func=_cmd_serve)

    ingest = commands.add_parser(
        "ingest",
        parents=[data_dir],
        help="load STAC items and collections from files, catalogs or a STAC API",
        description=(
            "Load STAC items (and their collections) into the catalogue. SOURCE is an item "
            "JSON file, an ItemCollection/FeatureCollection, NDJSON, a directory of these, "
            "a static catalog (catalog.json/collection.json) or the URL of a STAC API. "
            "Exit status: 0 all stored, 1 something failed, 2 bad usage, 130 interrupted."
        ),
    )
    ingest.add_argument("sources", nargs="+", metavar="SOURCE")
    ingest.add_argument(
        "--provider", help="provider prefix for every item (default: detected per item)"
    )
    ingest.add_argument("--dry-run", action="store_true", help="report, write nothing")
    ingest.add_argument("--json", action="store_true", help="print the report as JSON")
    ingest.add_argument("--collections", help="STAC API: comma list of collection ids")
    ingest.add_argument("--bbox", type=_bbox, help="STAC API: west,south,east,north")
    ingest.add_argument("--datetime", help="STAC API: an RFC 3339 instant or interval")
    ingest.add_argument("--filter", help="STAC API: a CQL2 filter (text, or JSON)")
    ingest.add_argument("--max-items", type=_positive, help="STAC API: stop after N items")
    ingest.add_argument(
        "--page-size", type=_positive, default=100, help="STAC API: items per page (100)"
    )
    ingest.add_argument(
        "--header",
        type=_header,
        action="append",
        metavar="'NAME: VALUE'",
        help="HTTP header for URL sources, e.g. 'Authorization: Bearer …' (repeatable)",
    )
    ingest.add_argument(
        "--batch-size", type=_positive, default=2000, help="items per transaction (2000)"
    )
    ingest.set_defaults(func=_cmd_ingest)

    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser(
        "migrate", parents=[data_dir], help="apply pgstac and astra migrations"
    ).set_defaults(func=_cmd_migrate)

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", parents=[data_dir], help="create a key")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=[s.name for s in Scope], default="read")
    create.add_argument("--providers", help="comma list of provider prefixes the key may see")
    create.add_argument("--collections", help="comma list of collections the key may see")
    create.set_defaults(func=_cmd_keys_create)
    key_commands.add_parser("list", parents=[data_dir], help="list keys").set_defaults(
        func=_cmd_keys_list
    )
    revoke = key_commands.add_parser("revoke", parents=[data_dir], help="revoke a key")
    revoke.add_argument("name_or_prefix", metavar="NAME_OR_PREFIX")
    revoke.set_defaults(func=_cmd_keys_revoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (AstraError, EmbeddedPostgresError) as exc:
        print(f"astra-stac: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
