"""The statements requests send to PostgreSQL, whichever way they go: through SQLAlchemy, or straight on the
session's asyncpg connection (``api/driver.py``)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", ";")


@contextmanager
def sent_statements(app: FastAPI) -> Iterator[list[str]]:
    """Record every statement of the connections checked out inside the block. The order is kept among
    SQLAlchemy's statements but not between the two kinds: asyncpg reports its own after they are done."""
    statements: list[str] = []
    engine = app.state.engine.sync_engine
    drivers: list[Any] = []

    def through_sqlalchemy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def on_the_driver(record: Any) -> None:  # SQLAlchemy's own (prepared) executions are not logged here
        statements.append(record.query)

    def checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        driver.add_query_logger(on_the_driver)
        drivers.append(driver)

    sa.event.listen(engine, "before_cursor_execute", through_sqlalchemy)
    sa.event.listen(engine, "checkout", checked_out)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", through_sqlalchemy)
        sa.event.remove(engine, "checkout", checked_out)
        for driver in drivers:
            driver.remove_query_logger(on_the_driver)


def work_of(statements: list[str]) -> list[str]:
    """The statements without the transaction control around them."""
    return [s for s in statements if not s.lstrip().upper().startswith(TRANSACTION_CONTROL)]
