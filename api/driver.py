"""Statements on the driver: the hot reads (and their audit entries) run on the session's own asyncpg
connection, inside the request's transaction and therefore under its row-level security scope.

See :class:`DriverStatement` and :func:`driver_connection`; :func:`fetch`, :func:`fetch_one` and
:func:`execute` are what a service calls. Use them for statements that change no ORM object on paths where
SQLAlchemy's per-execution work shows in a profile; everything else stays on the session.
"""

import collections
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import exc
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util import greenlet_spawn

from api.scoping import APPLY_SCOPE, scope_at_begin

_DRIVER_DIALECT = postgresql_asyncpg.dialect()


class DriverStatement:
    """A Core statement (or ``text()``) compiled once for asyncpg, to run on the session's own connection.

    The hot reads that change no object need neither the ORM nor SQLAlchemy's per-execution work (cache key,
    parameter processing, result wrapping); they still run in the request's transaction, so row-level security
    applies to them as to any statement (:func:`driver_connection`). Parameters are bound by name, with the
    column types' own conversions (enums, JSON); rows read back as the SQLAlchemy rows they replace would:
    attributes by column label, ``_mapping``, the column types' conversions (enums back to their class).

    An ``IN`` list cannot be compiled once: use ``= ANY(array parameter)``. A parameter used twice in the SQL
    is bound once per place. The JSON serializer is SQLAlchemy's default (``json.dumps``), as the engine's.
    """

    __slots__ = ("_binds", "_defaults", "_fixed", "_given", "_own", "_results", "_row", "sql")

    def __init__(self, statement: Any) -> None:
        # No column_keys: an INSERT names only the columns its values() give (the id is the column default).
        compiled = statement.compile(dialect=_DRIVER_DIALECT, column_keys=[])
        self.sql: str = compiled.string
        names = list(compiled.positiontup or ())
        params = compiled.construct_params(_check=False)
        self._defaults = {name: params[name] for name in names if not compiled.binds[name].required}
        self._binds = [(name, _bind_processor(compiled.binds[name].type)) for name in names]
        # The arguments of the statement's own values (literals in it) converted once; the caller's in their
        # places at each run.
        self._fixed = [_converted(processor, self._defaults.get(name)) for name, processor in self._binds]
        self._given = [(i, name, p) for i, (name, p) in enumerate(self._binds) if name not in self._defaults]
        self._own = [(i, name, p) for i, (name, p) in enumerate(self._binds) if name in self._defaults]
        columns = list(getattr(statement, "selected_columns", ()))
        # Labels as the SQL names them; a text() statement's come from its first row.
        self._row: type | None = _row_class([name for name, *_ in compiled._result_columns]) if columns else None
        self._results = [
            (i, processor)
            for i, column in enumerate(columns)
            if (processor := column.type.result_processor(_DRIVER_DIALECT, None)) is not None
        ]

    def args(self, params: dict[str, Any]) -> list[Any]:
        args = self._fixed.copy()
        for i, name, processor in self._given:
            args[i] = _converted(processor, params[name])
        if self._own and not self._defaults.keys().isdisjoint(params):
            for i, name, processor in self._own:  # a value of the statement's own given anew
                if name in params:
                    args[i] = _converted(processor, params[name])
        return args

    def row(self, record: Any) -> Any:
        if self._row is None:
            self._row = _row_class(list(record.keys()))
        if not self._results:
            return self._row(*record)
        values = list(record)
        for i, processor in self._results:
            values[i] = processor(values[i])
        return self._row(*values)


def _bind_processor(kind: Any) -> Any:
    """The type's bind processor; for a type that writes None as a value of its own (JSON's ``null``, as the
    ORM writes it), one marked to be given None too (:func:`_converted`)."""
    process = kind.bind_processor(_DRIVER_DIALECT)
    if process is None or not kind.should_evaluate_none:
        return process
    return _EvaluatesNone(process)


class _EvaluatesNone:
    __slots__ = ("process",)

    def __init__(self, process: Any) -> None:
        self.process = process

    def __call__(self, value: Any) -> Any:
        return self.process(value)


def _converted(processor: Any, value: Any) -> Any:
    """A parameter as the driver takes it: through its column type's bind processor (None stays None, but for
    a type that writes None as a value of its own)."""
    if processor is None or (value is None and type(processor) is not _EvaluatesNone):
        return value
    return processor(value)


def _row_class(labels: list[str]) -> type:
    base = collections.namedtuple("DriverRow", labels, rename=True)  # type: ignore[misc]

    class DriverRow(base):
        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return self._asdict()

    return DriverRow


class Transaction:
    """A request's transaction on a connection of the engine's pool, without a SQLAlchemy session.

    For the hot reads whose statements all go to the driver (:func:`fetch`, :func:`fetch_one`, :func:`execute`):
    a session's life — the ``Session`` built, the connection found through it and its transaction
    bookkeeping, the close — cost more than the read itself (0.12 ms of CPU per request against 0.03 ms for
    this). The connection is taken from the same pool as the sessions' (so the pool's size, its check of a
    connection idle too long and its refresh after a lost one hold alike), on the first statement; ``BEGIN``
    is sent before it, and the scope is set as in a session's transaction (``api/scoping.py``): by the
    principal's first statement itself inside :func:`api.scoping.scope_set_by_statement` (the sign-in
    look-up), else by applying the bound principal's scope first — never a statement as the owner by
    mistake. :meth:`end` commits or rolls back and gives the connection back.

    Offers what :mod:`api.scoping` and :mod:`api.audit` use of a session (``info``, ``in_transaction``,
    ``execute`` of a text statement, ``flush``, which has nothing to do); anything that needs the ORM takes a
    session of its own."""

    __slots__ = ("_engine", "_fairy", "connection", "info")

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._fairy: Any = None
        self.connection: Any = None  # the asyncpg connection, inside the transaction, once begun
        self.info: dict[str, Any] = {}

    def in_transaction(self) -> bool:
        return self.connection is not None

    async def begin(self) -> Any:
        """The asyncpg connection, inside the transaction (begun, and scoped, on first use)."""
        if self.connection is not None:
            return self.connection
        self._fairy = await greenlet_spawn(self._engine.sync_engine.raw_connection)
        connection = self._fairy.driver_connection
        try:
            await connection.execute("BEGIN")
        except BaseException as error:
            await self._release(error)
            raise
        self.connection = connection
        params = scope_at_begin(self)  # as a session's transaction begins (api/scoping.py)
        if params is not None:
            await self.execute(APPLY_SCOPE, params)
        return connection

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> None:
        """A text statement of :mod:`api.scoping` (the role and the scope), in the transaction."""
        await execute(self, _text_statement(statement), params)

    async def flush(self) -> None:
        """Nothing to write: no object is kept here."""

    async def end(self, *, commit: bool) -> None:
        """Commit (or roll back) and give the connection back to the pool; a connection found lost, or one
        whose transaction could not be ended, is dropped (and the pool refreshed) rather than given back."""
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            await connection.execute("COMMIT" if commit else "ROLLBACK")
        except BaseException as error:
            await self._release(error)
            if commit or not isinstance(error, Exception):
                raise
            # A rollback that fails (the connection is gone): the transaction ended with it, and the error
            # being answered is the one that made us roll back.
            return
        await self._release(None)

    async def _release(self, error: BaseException | None) -> None:
        fairy, self._fairy, self.connection = self._fairy, None, None
        if fairy is None:
            return
        driver = fairy.driver_connection
        if error is None and not driver.is_closed() and not driver.is_in_transaction():
            # Back to the pool. Nothing awaits in there: the pool's reset (a rollback) has no transaction of
            # the adapter's to end, and the connection stays open (the pool keeps every one it opened).
            fairy.close()
            return
        lost = driver.is_closed()
        await greenlet_spawn(fairy.invalidate, error if isinstance(error, Exception) else None)
        if lost:
            await self._engine.dispose(close=False)


_TEXT_STATEMENTS: dict[Any, DriverStatement] = {}


def _text_statement(statement: Any) -> DriverStatement:
    compiled = _TEXT_STATEMENTS.get(statement)
    if compiled is None:
        compiled = _TEXT_STATEMENTS[statement] = DriverStatement(statement)
    return compiled


# The session's transaction (a weak reference: the transaction refers to the session, whose info holds this, and
# a cycle would keep every closed session for the garbage collector) and its adapted connection, kept by the
# first statement sent on the driver in that transaction: the next ones (and the commit) find the connection
# here, without SQLAlchemy's look-up.
_DRIVER_KEY = "liushou_driver_adapted"


def _kept(session: AsyncSession) -> Any:
    """The adapted connection of the session's current transaction, if a driver statement has already begun it
    there and it is still open; else None."""
    kept = session.info.get(_DRIVER_KEY)
    if kept is None:
        return None
    transaction_ref, adapted = kept
    transaction: Any = transaction_ref()
    current: Any = session.sync_session._transaction
    if transaction is None or current is not transaction or not current.is_active:
        return None  # a savepoint inside it, or a transaction since committed, rolled back or invalidated
    return adapted if adapted._transaction is not None else None


async def driver_connection(session: Any) -> Any:
    """The session's own asyncpg connection, inside its transaction — begun, with the principal's scope set.

    SQLAlchemy's asyncpg adapter sends ``BEGIN`` only before its first statement; a statement sent on the
    driver before that would run outside the transaction (in autocommit, outside the scope, and not rolled back
    with the request). So the ORM transaction is begun here if need be (its first statement sets the scope,
    ``api/scoping.py``) and the driver's transaction started if no statement has started it yet (a system
    session, or a statement that sets the scope itself). The connection found is kept with the transaction
    (``session.info``): the request's next driver statements and its commit (:func:`commit`) skip the look-up."""
    if type(session) is Transaction:
        return await session.begin()
    adapted = _kept(session)
    if adapted is not None:
        return adapted.driver_connection
    if session.in_transaction():
        adapted = session.sync_session.connection().connection.dbapi_connection
    else:
        # Just checked out, so the DB-API connection is there: read without get_raw_connection()'s greenlet.
        adapted = (await session.connection()).sync_connection.connection.dbapi_connection
    if adapted is None:  # pragma: no cover - a connection the pool has just invalidated
        raise exc.DisconnectionError("the session's connection is gone")
    driver = adapted.driver_connection
    if adapted._transaction is None:
        try:
            async with adapted._execute_mutex:
                if adapted._transaction is None:
                    await adapted._start_transaction()
        except Exception as error:
            # The adapter wraps the driver's error in its own DB-API class; the driver's is the one api.errors
            # maps (a lost connection: 503).
            cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
            await _if_lost(session, driver, cause)
            raise cause from error
    session.info[_DRIVER_KEY] = (weakref.ref(session.sync_session._transaction), adapted)
    return driver


# How :func:`commit` writes the new objects of a type it may find pending in a session: one function per type
# (:func:`write_new_on_commit`), given the driver connection and the objects in the order they were added.
_NEW_ROW_WRITERS: dict[type, Callable[[Any, list[Any]], Awaitable[None]]] = {}


def write_new_on_commit(kind: type, writer: Callable[[Any, list[Any]], Awaitable[None]]) -> None:
    """Let :func:`commit` write pending new objects of ``kind`` itself, with ``writer``, on the driver: objects
    the ORM would only insert (nothing reads them back, no relationship, no flush event of their own — the
    entries of reads in the audit log), so that a transaction with only such objects pending still commits
    on the driver."""
    _NEW_ROW_WRITERS[kind] = writer


async def commit(session: AsyncSession) -> None:
    """Commit the session's transaction — on the driver when only driver statements ran in it.

    A request whose statements all went through the driver (the hot reads, a report) left SQLAlchemy nothing
    to flush but new objects of the types registered with :func:`write_new_on_commit` (the audit entries it
    recorded): those are written by their writers on the same connection, and ``COMMIT`` sent there directly,
    without the ORM's commit (its flush, transaction and connection bookkeeping, a greenlet); closing the
    session afterwards finds nothing to roll back and returns the connection to the pool. Any other
    transaction — an object loaded, changed or deleted, a savepoint open, another connection — commits through
    the session."""
    adapted = _kept(session)
    sync = session.sync_session
    if (
        adapted is None
        or sync.identity_map
        or sync.deleted
        or sync._transaction.nested  # type: ignore[union-attr]
        or len({entry[0] for entry in sync._transaction._connections.values()}) != 1  # type: ignore[union-attr]
        or any(type(obj) not in _NEW_ROW_WRITERS for obj in sync.new)
    ):
        await session.commit()
        return
    new: dict[type, list[Any]] = {}
    for obj in sync.new:
        new.setdefault(type(obj), []).append(obj)
    del session.info[_DRIVER_KEY]
    try:
        for kind, objects in new.items():
            for obj in objects:
                sync.expunge(obj)
            await _NEW_ROW_WRITERS[kind](adapted.driver_connection, objects)
        await adapted._call_and_discard(adapted._transaction.commit)
    except BaseException as error:
        await _if_lost(session, adapted.driver_connection, error)
        raise


async def _if_lost(session: Any, driver: Any, error: BaseException) -> None:
    """After a failed statement: if the driver's connection is closed, do what SQLAlchemy does for a disconnect
    seen on its own statements — drop this connection and replace the pool's others (the database may have
    restarted; each would fail a request of its own)."""
    if not driver.is_closed():
        return
    if type(session) is Transaction:
        await session._release(error)  # drops the connection and refreshes the pool
        return
    connection = await session.connection()
    await connection.invalidate(error if isinstance(error, Exception) else None)
    await connection.engine.dispose(close=False)


async def fetch(session: Any, statement: DriverStatement, params: dict[str, Any] | None = None) -> list[Any]:
    """The rows of a :class:`DriverStatement` run in the session's transaction (and scope)."""
    connection = await driver_connection(session)
    try:
        records = await connection.fetch(statement.sql, *statement.args(params or {}))
    except BaseException as error:
        await _if_lost(session, connection, error)
        raise
    return [statement.row(record) for record in records]


async def fetch_one(session: Any, statement: DriverStatement, params: dict[str, Any] | None = None) -> Any:
    """The one row of a :class:`DriverStatement` (None if there is none) in the session's transaction."""
    connection = await driver_connection(session)
    try:
        record = await connection.fetchrow(statement.sql, *statement.args(params or {}))
    except BaseException as error:
        await _if_lost(session, connection, error)
        raise
    return None if record is None else statement.row(record)


async def execute(session: Any, statement: DriverStatement, params: dict[str, Any] | None = None) -> None:
    """Run a :class:`DriverStatement` that returns nothing (an insert) in the session's transaction."""
    connection = await driver_connection(session)
    try:
        await connection.execute(statement.sql, *statement.args(params or {}))
    except BaseException as error:
        await _if_lost(session, connection, error)
        raise
