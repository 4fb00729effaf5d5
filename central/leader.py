"""Leader election among central workers: a PostgreSQL session-level advisory lock.

The lock lives on a connection of its own. The worker holding it is the leader; when that
process dies (SIGKILL included) the server ends its session and drops the lock, and the next
follower to ask gets it. Keyed by (``key``, the schema's name) so that deployments sharing a
database but not a schema never contend.

Split brain (a leader whose lock connection broke but which has not noticed yet) cannot
issue a warning twice: each leader takes a new term (``Store.begin_term``) and checks it in
every transaction that issues warnings (``Store.check_term``); judged packs also leave
``pack_queue`` in the same transaction as the CAP they cause, so a second evaluator's delete
finds them gone and rolls back (``Store.dequeue``).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_KEEPALIVES = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
_TRY = "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))"


class LeaderLock:
    def __init__(self, url: str, key: int, connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self.key = key
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def try_acquire(self) -> bool:
        """True when this worker is (now) the leader; never blocks on the lock itself."""
        import psycopg

        if self._conn is not None:
            return self.check()
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(self.url)
        # The server must notice a leader whose host vanished (no FIN): TCP keepalives on
        # this session end it, and free the lock, within about 11 s instead of hours.
        params["options"] = f"{params.get('options', '')} {_KEEPALIVES}".strip()
        try:
            conn = psycopg.connect(
                **params, autocommit=True, connect_timeout=int(self.connect_timeout_s)
            )
        except psycopg.Error as exc:
            log.warning("leader lock: cannot connect (%s)", exc)
            return False
        try:
            (got,) = conn.execute(_TRY, (self.key,)).fetchone()
        except psycopg.Error as exc:
            log.warning("leader lock: %s", exc)
            got = False
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def check(self) -> bool:
        """Is the lock's session still alive? False (and the lock let go) if not."""
        import psycopg

        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1").fetchone()
            return True
        except psycopg.Error as exc:
            log.warning("leader lock: session lost (%s); stepping down", exc)
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # ends the session: the server drops the lock
            finally:
                self._conn = None
