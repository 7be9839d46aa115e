"""`serve --demo`: duty contacts for the demo county and townships, and one closed incident whose timeline
the engine produced — told in time at every step. Seeding twice changes nothing."""

import sqlalchemy as sa
from sqlalchemy import func, select

from api.demo.context import demo_id
from api.demo.escalation import CASE_CODE, INCIDENT_KEY
from api.demo.seed import seed_demo
from api.models.escalation import Acknowledgement, DutyContact, StepStatus
from api.models.incidents import Incident, IncidentEvent, IncidentStatus
from api.models.notifications import (
    MessageStatus,
    OutboundMessage,
)
from api.services.emergency.timeline import timeline


async def counts(session) -> dict[str, int]:
    return {
        model.__tablename__: (await session.execute(select(func.count()).select_from(model))).scalar_one()
        for model in (Incident, IncidentEvent, OutboundMessage, Acknowledgement, DutyContact)
    }


async def test_the_demo_has_duty_contacts_and_one_closed_incident_with_a_full_timeline(app, system_session):
    await seed_demo(system_session, app.state.passwords)
    await system_session.commit()
    first = await counts(system_session)
    assert first["duty_contact"] == 3 and first["incident"] == 1
    incident = await system_session.get(Incident, demo_id(INCIDENT_KEY))
    assert (incident.case_code, incident.status) == (CASE_CODE, IncidentStatus.closed)
    story = await timeline(system_session, incident_id=incident.id)
    assert [s.status for s in story.steps] == [StepStatus.told] * 3
    assert all(s.deadline_met for s in story.steps)
    seen = [e.kind.value for e in story.entries]
    for kind in ("reported", "chain_frozen", "message_sent", "call_answered", "acknowledged", "reply_received"):
        assert kind in seen, kind
    assert seen[-1] == "closed" and seen.count("step_told") == 3
    routes = {e.detail["route"] for e in story.entries if e.kind.value == "acknowledged"}
    assert routes == {"voice_dtmf", "sms_reply", "mini_program"}
    # Nothing is left for a worker to send afterwards.
    left = await system_session.execute(
        select(func.count()).where(
            sa.or_(OutboundMessage.status == MessageStatus.pending, OutboundMessage.status == MessageStatus.sending)
        )
    )
    assert left.scalar_one() == 0

    await seed_demo(system_session, app.state.passwords)
    await system_session.commit()
    assert await counts(system_session) == first
