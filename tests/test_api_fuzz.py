"""Every operation of the OpenAPI document keeps its contract for every role, on generated input.

schemathesis generates valid and invalid requests for each operation; each is sent in process with the token of
one of fourteen callers (anonymous, every staff role in and out of school 1's area, two families), half of the
time at the real objects of school 1. Every answer must be no 5xx, a status code the document lists for that
operation, and a body matching the documented schema. A new endpoint is in the document, so it joins by itself.

Sized for CI: ``LIUSHOU_FUZZ_EXAMPLES`` cases per operation (default 36; ~2,500 in all, as operations without
parameters run out of cases sooner). Longer runs: ``python -m bench.fuzz_api --examples N``.
"""

import asyncio
import os

import httpx
import pytest

from tests.objects import ROLE_OF, Objects, add_families
from tests.openapi_cases import OPERATIONS, fuzz_operation, report_path, write_report

EXAMPLES = int(os.environ.get("LIUSHOU_FUZZ_EXAMPLES", "36"))

ROLES = [
    "anonymous",
    "platform",
    "bureau",
    "other_bureau",
    "official1",
    "official2",
    "admin1",
    "admin2",
    "admin3",
    "teacher1",
    "teacher1b",
    "teacher2",
    "family1",
    "family2",
]

# Operations that end the caller's login session: each case gets a session of its own, or the role's shared
# token would be revoked for every later case (and answer 401 for a reason the generated input did not cause).
ENDS_SESSION = {"POST /auth/logout"}


@pytest.mark.parametrize("label", list(OPERATIONS))
async def test_every_operation_keeps_its_contract_for_every_role(label, app, client, world, clock):
    await add_families(app, world, clock.now())
    objects = Objects(app, client, world, clock.now())
    ids = await objects.build_all()

    async def headers_for(who: str) -> dict[str, str]:
        if who == "anonymous":
            return {}
        if label in ENDS_SESSION:
            return {"Authorization": f"Bearer {await objects.fresh_token(who)}"}
        return world.headers(who)

    loop = asyncio.get_running_loop()
    # An error the app did not handle comes back as the 500 a real server sends, not raised into the test.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as lenient:
        result = await asyncio.to_thread(
            fuzz_operation,
            label,
            client=lenient,
            loop=loop,
            roles=ROLES,
            role_of=lambda who: ROLE_OF[who].value,
            headers_for=headers_for,
            object_ids=ids,
            max_examples=EXAMPLES,
        )
    if path := report_path():
        write_report(path, label, result)
    assert result.cases > 0
    if result.findings:
        findings = "\n".join(str(f) for f in result.findings.values())
        pytest.fail(f"{len(result.findings)} broken promise(s) in {result.cases} cases:\n{findings}", pytrace=False)
