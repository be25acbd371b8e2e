"""The astra-stac command: migrations, keys, and the embedded database."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from astra_stac.auth.keys import KEY_PREFIX
from astra_stac.cli import main
from astra_stac.db.embedded import EmbeddedPostgres
from astra_stac.db.migrate import migrate_astra


@pytest.fixture
def configured(monkeypatch, dsn):
    monkeypatch.setenv("ASTRA_DATABASE_URL", dsn)
    return dsn


def test_keys_create_prints_the_key_alone_on_the_last_line(configured, capsys):
    assert main(["keys", "create", "--name", "ci", "--scope", "write"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(KEY_PREFIX) and " " not in last
    with psycopg.connect(configured) as conn:
        scope = conn.execute("SELECT scope FROM astra.api_keys WHERE name = 'ci'").fetchone()
    assert scope == ("write",)


def test_keys_list_shows_no_secret(configured, capsys):
    main(["keys", "create", "--name", "listed"])
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["keys", "list"]) == 0
    out = capsys.readouterr().out
    assert "listed" in out and "live" in out
    assert secret not in out


def test_keys_revoke_by_name_and_errors(configured, capsys):
    main(["keys", "create", "--name", "gone"])
    assert main(["keys", "revoke", "gone"]) == 0
    assert "Revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "gone"]) == 1
    assert "No live key" in capsys.readouterr().err


def test_duplicate_live_name_is_refused(configured, capsys):
    assert main(["keys", "create", "--name", "twice"]) == 0
    assert main(["keys", "create", "--name", "twice"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_migrate_is_safe_to_rerun(configured, capsys):
    assert main(["db", "migrate"]) == 0
    assert main(["db", "migrate"]) == 0
    assert "applied: none" in capsys.readouterr().out
    assert migrate_astra(configured) == []
    with psycopg.connect(configured) as conn:
        versions = conn.execute("SELECT version FROM astra.migrations").fetchall()
    assert [v for (v,) in versions][:2] == ["0.1.0", "0.2.0"]


def test_commands_use_the_embedded_database_and_leave_a_running_one_running(monkeypatch, capsys):
    for name in ("ASTRA_DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    base = Path(tempfile.mkdtemp(prefix="astra-cli-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        # not running: the command starts it for itself and stops it again
        assert main(["keys", "create", "--name", "first", "--data-dir", str(base)]) == 0
        cluster = EmbeddedPostgres(base)
        assert not cluster.running()
        # running (as under `serve`): the command uses it and leaves it up
        cluster.start()
        assert main(["keys", "list", "--data-dir", str(base)]) == 0
        assert "first" in capsys.readouterr().out
        assert cluster.running()
        cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_keys_create_with_provider_limits(configured, capsys):
    assert main(["keys", "create", "--name", "es", "--providers", "earth-search,landsat"]) == 0
    out = capsys.readouterr().out
    assert "limited to providers earth-search, landsat" in out
    assert main(["keys", "create", "--name", "bad", "--providers", "nowhere"]) == 2
    assert "unknown provider(s) nowhere" in capsys.readouterr().err
    main(["keys", "list"])
    assert "earth-search,landsat" in capsys.readouterr().out
