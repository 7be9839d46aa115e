"""Every route answers its own paths: none is hidden by a route tried before it.

FastAPI tries routes in the order the routers were included (``api/main.py`` puts the most frequent requests'
routers first, for speed). A route with a parameter tried before a fixed path of the same shape
(``/children/{child_id}`` before ``/children/completeness``) would answer that path itself, with a 422 or the
wrong body. For each route and method, a path of its own shape (each parameter filled in) must first match that
route, in the app's real order."""

import re
import uuid

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match

from api.main import create_app
from api.settings import Settings

SAMPLE = str(uuid.UUID(int=1))


def _in_order(routes: list[BaseRoute]) -> list[BaseRoute]:
    flat: list[BaseRoute] = []
    for route in routes:
        included = getattr(getattr(route, "original_router", None), "routes", None)
        flat.extend(_in_order(included) if included is not None else [route])
    return flat


def _first_match(routes: list[BaseRoute], method: str, path: str) -> BaseRoute | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    for route in routes:
        if route.matches(scope)[0] == Match.FULL:
            return route
    return None


def test_no_route_is_hidden_by_an_earlier_one():
    routes = _in_order(create_app(Settings()).router.routes)
    api_routes = [route for route in routes if isinstance(route, APIRoute)]
    assert len(api_routes) > 150  # every router's routes were found
    hidden = []
    for route in api_routes:
        path = re.sub(r"\{[^}]+\}", SAMPLE, route.path)
        for method in sorted(route.methods):
            first = _first_match(routes, method, path)
            if first is not route:
                hidden.append(f"{method} {route.path} answered by {getattr(first, 'path', first)}")
    assert hidden == []


def test_the_check_sees_a_hidden_route():
    """The check above on an app where a parameter route, included first, hides a fixed path: it must say so."""
    first, second = APIRouter(), APIRouter()

    @first.get("/things/{thing_id}")
    async def one_thing(thing_id: str) -> str:
        return thing_id

    @second.get("/things/special")
    async def special() -> str:
        return "special"

    hiding, fine = FastAPI(), FastAPI()
    hiding.include_router(first)
    hiding.include_router(second)
    fine.include_router(second)
    fine.include_router(first)
    for app, answered_by in ((hiding, "/things/{thing_id}"), (fine, "/things/special")):
        routes = _in_order(app.router.routes)
        special_route = next(route for route in routes if getattr(route, "path", "") == "/things/special")
        assert getattr(_first_match(routes, "GET", "/things/special"), "path", None) == answered_by
        assert (_first_match(routes, "GET", "/things/special") is special_route) == (app is fine)
