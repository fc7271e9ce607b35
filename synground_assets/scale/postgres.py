"""dagster-postgres's storages, whose webserver connection is checked before each use.

In the webserver, dagster-postgres keeps one pooled connection per storage open
(`optimize_for_webserver`). After a PostgreSQL restart that connection is dead, and the first
request that uses it fails with HTTP 500. These storages pool with SQLAlchemy's `pool_pre_ping`: a
dead connection is noticed at checkout and replaced, so the first request after a restart is
answered. The daemon, the code server and the workers open a connection per use (NullPool) and need
nothing. deploy/dagster.yaml names them as its run, event log and schedule storage.
"""

from __future__ import annotations

from typing import Any

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, set_pg_statement_timeout
from sqlalchemy import event


class _PingedWebserverPool:
    """`optimize_for_webserver` as dagster-postgres writes it, plus `pool_pre_ping`."""

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
