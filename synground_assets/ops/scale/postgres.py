"""dagster-postgres's storages, whose webserver connection is checked before each use.

In the webserver, dagster-postgres keeps one pooled connection per storage open
(`optimize_for_webserver`). After a PostgreSQL restart that connection is dead, and the first
request that uses it fails with HTTP 500. These storages pool with SQLAlchemy's `pool_pre_ping`: a
dead connection is noticed at checkout and replaced, so the first request after a restart is
answered. The daemon, the code server and the workers open a connection per use (NullPool).

Every process waits out a PostgreSQL outage of up to `SYNGROUND_PG_OUTAGE_S` seconds (default 60)
when it connects: dagster-postgres gives up after 5 tries in about 6 s (`retry_pg_connection_fn`,
dagster_postgres/utils.py), so a step that logged an event during a short restart failed and its
run was retried. A statement already running when PostgreSQL goes down still fails. Messages name
the server without its password. deploy/dagster.yaml names these as its run, event log and
schedule storage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy.exc
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import (
    DagsterPostgresException,
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
    set_pg_statement_timeout,
)
from sqlalchemy import event

from synground_assets.config import settings
from synground_assets.ops.scale.urls import redact, safe_url

log = logging.getLogger(__name__)
DEFAULT_OUTAGE_S = 60.0
_CONNECTION_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError)


def outage_s() -> float:
    value = settings.pg_outage_s() or str(DEFAULT_OUTAGE_S)
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"SYNGROUND_PG_OUTAGE_S={value!r}: expected seconds, e.g. 60") from None


def connect_through_outage(engine: sqlalchemy.engine.Engine, patience_s: float | None = None):
    """`engine.connect()`, tried again (backing off to 2 s between tries) for up to `patience_s`
    while PostgreSQL cannot be reached. A refused password is not an outage: raised at once."""
    patience_s = outage_s() if patience_s is None else patience_s
    deadline, attempt = time.monotonic() + patience_s, 0
    while True:
        try:
            return engine.connect()
        except _CONNECTION_ERRORS as exc:
            text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                          engine.url.password)
            if "authentication failed" in text or time.monotonic() >= deadline:
                raise DagsterPostgresException(f"PostgreSQL at {safe_url(engine.url.render_as_string())} cannot "
                                               f"be reached ({text}); waited {patience_s:.0f} s "
                                               "(SYNGROUND_PG_OUTAGE_S)") from None
            if attempt % 5 == 0:
                log.warning(f"PostgreSQL cannot be reached ({text}); trying again for up to {patience_s:.0f} s")
            attempt += 1
            time.sleep(min(0.2 * 2 ** attempt, 2.0))


class _PingedWebserverPool:
    """`optimize_for_webserver` as dagster-postgres writes it, plus `pool_pre_ping`; connections
    that wait out a short outage."""

    @contextmanager
    def _outage_tolerant_connection(self) -> Iterator[Any]:
        connection = connect_through_outage(self._engine)
        try:
            yield connection
        finally:
            connection.close()

    def connect(self, run_id: str | None = None):  # the run and schedule storages' connection
        return self._outage_tolerant_connection()

    def _connect(self):  # the event log storage's
        return self._outage_tolerant_connection()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # As dagster-postgres's three storages do, but building this class (theirs name their own).
        return cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
                   should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                   token_provider=get_token_provider_from_config(config_value))

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        kwargs: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_size": 1, "pool_recycle": pool_recycle,
                                  "max_overflow": max_overflow, "pool_pre_ping": True}
        options = self._engine.url.query.get("options")
        if options:
            kwargs["connect_args"] = {"options": options}
        self._engine = create_pg_engine(self.postgres_url, self._token_provider, **kwargs)
        event.listen(self._engine, "connect",
                     lambda connection, _: set_pg_statement_timeout(connection, statement_timeout))


class PingedPostgresRunStorage(_PingedWebserverPool, PostgresRunStorage):
    pass


class PingedPostgresEventLogStorage(_PingedWebserverPool, PostgresEventLogStorage):
    pass


class PingedPostgresScheduleStorage(_PingedWebserverPool, PostgresScheduleStorage):
    pass
