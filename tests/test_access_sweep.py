"""Access sweep: every object endpoint, asked by every account out of that object's scope, answers as if the
object did not exist — 404 (or, for a role the endpoint never admits, the same 403 ``role_forbidden`` it gives
for any id) — never data, never a 2xx, never a 5xx.

The endpoints come from the app itself (its routes and OpenAPI document), the objects from the builders of
``tests/objects.py`` (one per id kind, in school 1). So a new endpoint is swept the day it is added, and one
whose id kind has no builder fails here, saying to add one.
"""

import copy

import pytest
from fastapi import APIRouter, FastAPI
from hypothesis import HealthCheck, Phase, find, settings
from starlette.routing import BaseRoute

from tests.objects import BUILDERS, IN_SCOPE, NOT_OBJECT_IDS, OUT_OF_SCOPE, ROLE_OF, Level, Objects, add_families
from tests.openapi_cases import OPERATIONS, SPEC, allowed_roles, app_routes, path_parameters, send, valid_body

NOBODY = "00000000-0000-4000-8000-000000000000"  # an id no object has: what "not found" looks like

FIRST_EXAMPLE = settings(
    database=None,
    derandomize=True,
    max_examples=500,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def id_kinds(spec: dict) -> dict[str, list[str]]:
    """Every path parameter of the document that names an object, with the operations that take it."""
    kinds: dict[str, list[str]] = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] not in NOT_OBJECT_IDS:
                    kinds.setdefault(parameter["name"], []).append(f"{method.upper()} {path}")
    return kinds


def kinds_without_builder(spec: dict) -> list[str]:
    return [
        f"{kind} (in {', '.join(labels)}): add a builder of one such object in school 1 to BUILDERS in "
        "tests/objects.py, or, if it names no object, say why in NOT_OBJECT_IDS"
        for kind, labels in id_kinds(spec).items()
        if kind not in BUILDERS
    ]


def undocumented_routes(routes: list[BaseRoute], spec: dict) -> list[str]:
    """Routes with a path parameter that the OpenAPI document (and so this sweep) does not know."""
    documented = {f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item}
    return [label for label in app_routes(routes) if "{" in label and label not in documented]


SWEPT = [label for label in OPERATIONS if any(k not in NOT_OBJECT_IDS for k in path_parameters(label))]


def test_every_id_kind_of_the_api_has_a_builder():
    assert not (missing := kinds_without_builder(SPEC)), "\n".join(missing)


def test_a_new_endpoint_with_an_unknown_id_kind_fails_the_sweep():
    spec = copy.deepcopy(SPEC)
    spec["paths"]["/home-visits/{visit_id}"] = {
        "get": {"parameters": [{"name": "visit_id", "in": "path", "required": True, "schema": {"type": "string"}}]}
    }
    assert [m.split(" (")[0] for m in kinds_without_builder(spec)] == ["visit_id"]
    assert "GET /home-visits/{visit_id}" in kinds_without_builder(spec)[0]


def test_every_route_with_an_id_is_in_the_document(app: FastAPI):
    routes = app_routes(app.routes)
    assert len(routes) == len(OPERATIONS) + 4  # the document's operations, and the document and its viewers
    assert not (missing := undocumented_routes(app.routes, SPEC)), f"routes the sweep cannot see: {missing}"
    assert SPEC == app.openapi()


def test_a_route_left_out_of_the_document_is_caught():
    hidden = APIRouter(prefix="/children")

    @hidden.get("/{child_id}/secret-notes", include_in_schema=False)
    async def notes(child_id: str) -> dict:
        return {}

    app = FastAPI()
    app.include_router(hidden)
    assert undocumented_routes(app.routes, SPEC) == ["GET /children/{child_id}/secret-notes"]


def sample_case(label: str, path: dict[str, str]):
    """The simplest valid request of an operation (a body its request model accepts), at the given ids."""
    strategy = OPERATIONS[label].as_strategy(path_parameters=path)
    return find(strategy, lambda case: valid_body(label, case), settings=FIRST_EXAMPLE)


def expected_refusal(label: str, who: str) -> tuple[int, str]:
    allowed = allowed_roles(label)
    if allowed and ROLE_OF[who].value not in allowed:
        return 403, "role_forbidden"
    return 404, ""


@pytest.mark.parametrize("label", SWEPT)
async def test_an_object_out_of_scope_is_not_found(label, app, client, world, clock):
    kinds = [k for k in path_parameters(label) if k not in NOT_OBJECT_IDS]
    if missing := [k for k in kinds if k not in BUILDERS]:
        pytest.fail(f"{label}: no builder for {missing}: add one to BUILDERS in tests/objects.py", pytrace=False)
    await add_families(app, world, clock.now())
    objects = Objects(app, client, world, clock.now())
    real = {kind: await objects.get(kind) for kind in kinds}
    case = sample_case(label, real)
    nowhere = dict.fromkeys(kinds, NOBODY)
    levels = {BUILDERS[k].level for k in kinds}
    outsiders = sorted({who for level in levels for who in OUT_OF_SCOPE[level]})

    broken = []
    for who in outsiders:
        headers = world.headers(who)
        case.path_parameters.update(real)
        answer = await send(client, case, headers)
        case.path_parameters.update(nowhere)
        baseline = await send(client, case, headers)
        status, code = expected_refusal(label, who)
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else None
        got_code, base_code = error_code(answer), error_code(baseline)
        if (
            answer.status_code != status
            or (code and got_code != code)
            or not isinstance(body, dict)
            or set(body) != {"error"}
            or (answer.status_code, got_code) != (baseline.status_code, base_code)
        ):
            broken.append(
                f"{who} ({ROLE_OF[who]}): {answer.status_code} {answer.text[:200]} "
                f"— expected {status}{' ' + code if code else ''}, as for an id that does not exist "
                f"({baseline.status_code} {base_code})"
            )
    if broken:
        pytest.fail(f"{label} at objects of school 1 {real}:\n" + "\n".join(broken), pytrace=False)

    # The control: for an account that sees the objects, whether they exist makes a difference (it gets
    # past "not found"), so the refusals above are about scope, not about objects that are not there.
    child_level = levels == {Level.child}
    insiders = [w for w in IN_SCOPE if (w != "family1" or child_level) and expected_refusal(label, w)[0] == 404]
    assert insiders, f"{label}: no account of IN_SCOPE may call it; add one"
    headers = world.headers(insiders[0])
    case.path_parameters.update(nowhere)
    baseline = await send(client, case, headers)
    case.path_parameters.update(real)
    control = await send(client, case, headers)
    assert control.status_code < 500 and (control.status_code, error_code(control)) != (
        baseline.status_code,
        error_code(baseline),
    ), (
        f"{label} as {insiders[0]} (in scope) → {control.status_code} {control.text[:300]}, as for an id that does "
        f"not exist: the built objects {real} are not reached, so the sweep would prove nothing"
    )


def error_code(response) -> str | None:
    if response.status_code < 400 or not response.headers.get("content-type", "").startswith("application/json"):
        return None
    return response.json().get("error", {}).get("code")
