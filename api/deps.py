"""FastAPI dependencies as ``Annotated`` aliases: the session, the clock, settings, and the authenticator."""

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import anyio
import httpx
from fastapi import Depends, Query, Request, Response, Security
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, serialize_response
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from api import driver
from api.audit import CLOCK_KEY
from api.clock import Clock
from api.context import current_request
from api.crypto import FieldCipher
from api.errors import Forbidden, Unauthorized
from api.models.accounts import ROLE_LABELS, Role
from api.scoping import ANONYMOUS, Principal, set_principal
from api.security import Passwords, read_access_token
from api.services.auth import load_principal
from api.settings import Settings

oauth2 = OAuth2PasswordBearer(
    tokenUrl="/auth/token",
    scopes={role.value: ROLE_LABELS[role] for role in Role},
    auto_error=False,
    description="密码登录 (staff) — or paste an access token from WeChat login.",
)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit when the endpoint returns, roll back if it raises.

    Used with ``scope="function"`` (``SessionDep``): the commit runs after the endpoint and the response
    model are done but before a byte of the response is sent, so a 2xx only ever leaves for a durable write,
    the client's next request reads it, and a commit that fails answers an error (``api.errors``) instead.
    The default scope would commit after the response has gone out.
    """
    async with request.app.state.sessionmaker() as session:
        await set_principal(session, ANONYMOUS)  # until a token says otherwise; costs no round trip
        session.info[CLOCK_KEY] = request.app.state.clock
        try:
            yield session
            await driver.commit(session)  # a transaction of driver statements only commits on the driver
        except BaseException:
            await session.rollback()
            raise


_TRANSACTION = "liushou.transaction"
_PRINCIPAL = "liushou.principal"


class DriverRoute(APIRoute):
    """A route for a hot read whose statements all go to the driver: its request works in a transaction on the
    driver, without a session (:class:`api.driver.Transaction`), signed in by any account (a route for some
    roles only: :func:`driver_route`).

    Before the endpoint runs, the caller is authenticated as by :func:`authenticate` — the same token checks,
    the principal bound to the transaction, 401 without one — and the endpoint runs inside the transaction:
    committed once the response is built and before a byte of it is sent, as :func:`get_session`'s, rolled
    back if anything raised. Both are done here rather than by dependencies: FastAPI's machinery for a
    generator dependency (its exit stack, cancel scope and shielded exit) and for a security dependency cost
    more than the transaction and the look-up themselves. The endpoint finds them with
    :func:`driver_transaction` and :func:`driver_principal`; its OpenAPI names the token scheme and the roles
    (:func:`signed_in`), as a security dependency's does.

    The endpoint is called by a lean handler of this class, not FastAPI's general one, which on every request
    solves dependencies it does not have (building the query, headers and cookies, a sub-response), looks up
    its endpoint's context and validates the returned model again against the response model. So such an
    endpoint takes path and query parameters only (and the ``Request``), validated by FastAPI's own
    ``request_params_to_args`` into the same 422; it returns a model of its response model, serialized as
    FastAPI would (by alias, to JSON). A route that needs more is refused when it is built
    (:func:`_lean_endpoint`)."""

    allowed = SecurityScopes()  # the roles that may call it (security scopes); none: any signed-in account

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = self._lean_handler()

        async def signed_in_transaction(request: Request) -> Response:
            transaction = driver.Transaction(request.app.state.engine)
            transaction.info[CLOCK_KEY] = request.app.state.clock
            request.scope[_TRANSACTION] = transaction
            try:
                request.scope[_PRINCIPAL] = await _principal(self.allowed, request, transaction, await oauth2(request))
                response = await handler(request)
            except BaseException:
                # Shielded, as FastAPI shields a dependency's exit: a cancelled request still ends its
                # transaction and gives its connection back.
                with anyio.CancelScope(shield=True):
                    await transaction.end(commit=False)
                raise
            with anyio.CancelScope(shield=True):
                await transaction.end(commit=True)
            return response

        return signed_in_transaction

    def _lean_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        _lean_endpoint(self)
        dependant, endpoint, field = self.dependant, self.endpoint, self.response_field
        status_code = self.status_code or 200
        # The response model's own classes: a model of one of them is serialized by its own serializer, as
        # FastAPI's serializer for the response model would (validating it again would change nothing).
        models = _model_classes(self.response_model)

        async def handle(request: Request) -> Response:
            values, errors = request_params_to_args(dependant.path_params, request.path_params)
            if dependant.query_params:
                query_values, query_errors = request_params_to_args(dependant.query_params, request.query_params)
                values.update(query_values)
                errors = errors + query_errors
            if errors:
                raise RequestValidationError(errors)
            if dependant.request_param_name:
                values[dependant.request_param_name] = request
            content = await endpoint(**values)
            if isinstance(content, Response):
                return content
            if type(content) in models:
                body = content.__pydantic_serializer__.to_json(content, by_alias=True)
            else:
                body = await serialize_response(field=field, response_content=content, dump_json=True)
            return Response(body, status_code=status_code, media_type="application/json")

        return handle


def _model_classes(annotation: Any) -> frozenset[type[BaseModel]]:
    """The model classes a response model stands for: itself, or the members of a union (annotated or not)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _model_classes(get_args(annotation)[0])
    if origin is Union or origin is UnionType:
        return frozenset().union(*(_model_classes(member) for member in get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return frozenset({annotation})
    return frozenset()


def _lean_endpoint(route: APIRoute) -> None:
    """Refuse (TypeError, when the app is built) a :class:`DriverRoute` whose endpoint needs what its lean
    handler does not give: a thread, dependencies, a body, headers or cookies, background tasks or a
    ``Response`` to set, another response class, or a response model filtered by include, exclude or unset
    fields."""
    d = route.dependant
    needs = [
        name
        for name, needed in (
            ("a thread (a plain def endpoint)", not inspect.iscoroutinefunction(d.call)),
            ("dependencies", d.dependencies),
            ("a body", d.body_params),
            ("headers", d.header_params),
            ("cookies", d.cookie_params),
            ("background tasks", d.background_tasks_param_name),
            ("a Response to set", d.response_param_name),
            ("a websocket", d.websocket_param_name or d.http_connection_param_name),
            ("a response model", route.response_field is None),
            ("another response class", not isinstance(route.response_class, DefaultPlaceholder)),
            (
                "a filtered response model",
                route.response_model_include is not None
                or route.response_model_exclude is not None
                or route.response_model_exclude_unset
                or route.response_model_exclude_defaults
                or route.response_model_exclude_none
                or not route.response_model_by_alias,
            ),
        )
        if needed
    ]
    if needs:
        raise TypeError(f"{route.path}: a DriverRoute's lean handler does not give its endpoint {', '.join(needs)}")


def driver_route(*roles: Role) -> type[DriverRoute]:
    """A :class:`DriverRoute` that only the given roles may call (403 ``role_forbidden`` for the others)."""
    return type("DriverRouteFor", (DriverRoute,), {"allowed": SecurityScopes(scopes=[role.value for role in roles])})


def signed_in(*roles: Role) -> dict[str, Any]:
    """A :class:`DriverRoute`'s ``openapi_extra``: the token scheme its requests are signed in with and the roles
    allowed, as a security dependency would state them."""
    return {"security": [{"OAuth2PasswordBearer": [role.value for role in roles]}]}


def driver_transaction(request: Request) -> driver.Transaction:
    """The transaction of a :class:`DriverRoute`'s request."""
    transaction: driver.Transaction | None = request.scope.get(_TRANSACTION)
    if transaction is None:  # pragma: no cover - a programming error: the route is not a DriverRoute
        raise RuntimeError(f"{request.url.path}: not a DriverRoute, no driver transaction")
    return transaction


def driver_principal(request: Request) -> Principal:
    """The signed-in caller of a :class:`DriverRoute`'s request."""
    principal: Principal | None = request.scope.get(_PRINCIPAL)
    if principal is None:  # pragma: no cover - a programming error: the route is not a DriverRoute
        raise RuntimeError(f"{request.url.path}: not a DriverRoute, no principal")
    return principal


# The small dependencies below are ``async def`` although they never wait: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hop on every request for a lookup on app.state.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def get_now(clock: Annotated[Clock, Depends(get_clock)]) -> datetime:
    return clock.now()


async def get_http(request: Request) -> httpx.AsyncClient:
    http: httpx.AsyncClient = request.app.state.http
    return http


async def get_passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


async def get_cipher(request: Request) -> FieldCipher:
    cipher: FieldCipher = request.app.state.cipher
    return cipher


async def get_client_ip() -> str | None:
    ctx = current_request()
    return ctx.client_ip if ctx else None


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

# Query integers reach PostgreSQL as int64: an unbounded one (offset=9223372036854775808) would be a 500.
# Every paging endpoint takes ``offset: Offset = 0``; every other integer parameter carries its own ``le=``
# (tests/test_request_plumbing.py sends huge integers to every integer parameter in the OpenAPI schema).
MAX_OFFSET = 1_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="跳过前几条 (rows to skip)")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
NowDep = Annotated[datetime, Depends(get_now)]
HttpDep = Annotated[httpx.AsyncClient, Depends(get_http)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
CipherDep = Annotated[FieldCipher, Depends(get_cipher)]
ClientIpDep = Annotated[str | None, Depends(get_client_ip)]


async def authenticate(
    security_scopes: SecurityScopes,
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2)],
) -> Principal:
    """The one authenticator: checks the token, binds the principal to the session (its scope is set in the
    same round trip that checks the login session), enforces the roles.

    Roles an endpoint allows are given as security scopes (``Security(authenticate, scopes=[...])``),
    so they show in OpenAPI; no scopes means any signed-in account. Settings and clock are read from the app
    here rather than as dependencies: each dependency FastAPI solves costs on every request."""
    return await _principal(security_scopes, request, session, token)


async def _principal(security_scopes: SecurityScopes, request: Request, db: Any, token: str | None) -> Principal:
    settings: Settings = request.app.state.settings
    now = request.app.state.clock.now()
    if not token:
        raise Unauthorized()
    principal = await load_principal(db, read_access_token(settings, token, now))
    if security_scopes.scopes and principal.role not in security_scopes.scopes:
        raise Forbidden("当前角色无权访问 (your role cannot do this)", code="role_forbidden")
    return principal


def allow(*allowed: Role) -> Any:
    """``Security(...)`` marker for a principal that only the given roles may be:
    ``Annotated[Principal, allow(Role.school_admin)]``."""
    return Security(authenticate, scopes=[r.value for r in allowed])


CurrentPrincipal = Annotated[Principal, Security(authenticate)]
STAFF_ROLES = (Role.platform_admin, Role.county_bureau, Role.township_official, Role.school_admin, Role.teacher)
Staff = Annotated[Principal, allow(*STAFF_ROLES)]
SchoolAdmin = Annotated[Principal, allow(Role.platform_admin, Role.school_admin)]
Managers = Annotated[Principal, allow(Role.platform_admin, Role.county_bureau, Role.school_admin)]
