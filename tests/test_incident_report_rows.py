"""The exact rows one incident report writes, table by table and column by column, pinned against a recorded
copy (``tests/data/incident_report_rows.json``), so that any change to how the report writes them (fewer
statements, other SQL) is checked against what it wrote before.

Every table of the database is read before and after one ``POST /incidents``; the rows that appeared (and
those that went) are the report's writes. What is drawn at random is named instead of compared by value —
ids (by where they first appear, in an order that does not depend on their values: the world's own by
name), the case code, the SMS reply codes, the acknowledgement tokens (by the message they sign); serial
keys by their order; a time the database stamps itself (``now()``) as such; the statistics' marks (one per
writing statement) as the set of schools they mark. Everything else is compared as
it is: the time of each row, its status, every address, every text and every line of the timeline, and the
order of the timeline.

Three reports cover what freezing a chain can do: an ordinary one (everyone reachable, every step
sending); a late one (step 1's deadline already missed: a breach and the leaders alerted); and one with a
held step and a party with nobody to reach (flagged at once, the leaders alerted).

After a deliberate change of what a report writes, re-record with ``LIUSHOU_RECORD_REPORT_ROWS=1`` and
review the difference of the data file like code.
"""

import json
import os
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from api import ack_links
from api.db import scoped_session
from api.models.guardians import GuardianRole
from api.scoping import SYSTEM
from tests.test_escalation_support import GRANDMA, Kit, escalation_settings

DATA = Path(__file__).parent / "data" / "incident_report_rows.json"
RECORD = os.environ.get("LIUSHOU_RECORD_REPORT_ROWS") == "1"

# The tables a report writes, in the order their rows are named; any other table's rows come after.
ORDER = (
    "incident",
    "escalation_step",
    "escalation_party",
    "escalation_target",
    "reply_code",
    "outbound_message",
    "incident_event",
    "audit_log",
    "stats_dirty",
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)$")


@pytest.fixture
def settings():
    return escalation_settings()


async def _tables(kit: Kit) -> list[str]:
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        names = (
            await s.execute(
                sa.text(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version'"
                )
            )
        ).scalars()
        return sorted(names)


async def _contents(kit: Kit, tables: list[str]) -> dict[str, set[str]]:
    """Every row of every table, as canonical JSON (read as the system: no row-level policy hides one). A
    JSON column's SQL NULL and JSON ``null`` read alike there: whether it is SQL NULL is added."""
    out: dict[str, set[str]] = {}
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        json_columns = (
            await s.execute(
                sa.text(
                    "SELECT table_name, column_name FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND data_type IN ('json', 'jsonb')"
                )
            )
        ).all()
        for table in tables:
            extra = "".join(
                f" || jsonb_build_object('{c} is SQL NULL', t.\"{c}\" IS NULL)" for t_, c in json_columns if t_ == table
            )
            rows = (await s.execute(sa.text(f'SELECT (to_jsonb(t){extra})::text FROM "{table}" t'))).scalars()
            out[table] = {json.dumps(json.loads(r), sort_keys=True, ensure_ascii=False) for r in rows}
    return out


class Names:
    """Stable names for values drawn at random."""

    def __init__(self, kit: Kit, known: dict[str, uuid.UUID], now: datetime) -> None:
        self.ids: dict[str, str] = {str(v): f"<{k}>" for k, v in {**kit.world.ids, **known}.items()}
        self.hex: dict[str, str] = {}
        self.literals: list[tuple[re.Pattern[str], str]] = []
        self.now = now
        self.counts: dict[str, int] = {}
        self.naming = True  # while rows are being ordered: an id not named yet reads "<?>"

    def other(self, value: str) -> str:
        """An id of a row the report did not write (a duty contact), named on first sight."""
        return self.name_id(value, "other")

    def name_id(self, value: str, table: str) -> str:
        if value not in self.ids:
            n = self.counts[table] = self.counts.get(table, 0) + 1
            self.ids[value] = f"<{table} {n}>"
            self.hex[uuid.UUID(value).hex] = self.ids[value]
        return self.ids[value]

    def text(self, value: str) -> str:
        for pattern, name in self.literals:
            value = pattern.sub(name, value)
        value = _UUID.sub(lambda m: self.ids.get(m.group(0), "<?>" if self.naming else self.other(m.group(0))), value)
        value = _HEX_ID.sub(lambda m: self.hex.get(m.group(0), m.group(0)), value)
        if _TIME.match(value):
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if abs(at - self.now) > timedelta(days=2):
                return "<db now()>"
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(k): self.value(v) for k, v in value.items()}
        return value


def _tokens(rows: list[dict[str, Any]], key_ring: str) -> list[tuple[re.Pattern[str], str]]:
    """Each message's acknowledgement token, as the id of the message it signs (named like any id later)."""
    return [(re.compile(re.escape(ack_links.ack_token(key_ring, uuid.UUID(r["id"])))), f"ack({r['id']})") for r in rows]


async def written(kit: Kit, payload: dict[str, Any], known: dict[str, uuid.UUID]) -> dict[str, Any]:
    """Report through the API; the rows that appeared and went, per table, with drawn values named."""
    headers = await kit.headers("teacher1")  # signing in writes rows of its own: before the first read
    tables = await _tables(kit)
    before = await _contents(kit, tables)
    r = await kit.client.post("/incidents", json=payload, headers=headers)
    assert r.status_code == 201, r.text
    after = await _contents(kit, tables)
    added = {t: [json.loads(x) for x in after[t] - before[t]] for t in tables}
    gone = {t: [json.loads(x) for x in before[t] - after[t]] for t in tables}
    answer = r.json()

    names = Names(kit, {**known, "incident": uuid.UUID(answer["id"])}, kit.clock.now())
    names.literals.append((re.compile(re.escape(answer["case_code"])), "<case code>"))
    names.literals.append((re.compile(re.escape(r.headers["x-request-id"])), "<the request's id>"))
    names.literals.append((re.compile(re.escape(kit.app.state.settings.public_base_url)), "<public base url>"))
    messages = added.get("outbound_message", [])
    names.literals += _tokens(messages, kit.app.state.settings.ack_link_keys)

    order = [t for t in ORDER if t in tables] + [t for t in tables if t not in ORDER]
    # First every row is put in order and its id named, table by table; then the rows are written out (a row
    # may name one that comes later: a party its current message).
    for table in order:
        rows = added[table]
        if rows and all(isinstance(r.get("id"), int) for r in rows):
            # Serial keys by their order of insertion.
            rows.sort(key=lambda r: r["id"])
            first = rows[0]["id"]
            for r in rows:
                r["id"] = f"+{r['id'] - first}"
        else:
            # In an order of what they say (ids not yet named all read "<?>").
            rows.sort(key=lambda r: json.dumps(names.value(r), sort_keys=True, ensure_ascii=False))
        for r in rows:
            if isinstance(r.get("id"), str) and _UUID.fullmatch(r["id"]):
                names.name_id(r["id"], table)
        if table == "reply_code":
            # A reply code is named by the party and number it was drawn for (named by now), not its value.
            held = sorted(rows, key=lambda r: (names.text(r["party_id"]), r["address"]))
            for n, r in enumerate(held, start=1):
                names.literals.append((re.compile(rf"(?<!\d){re.escape(r['code'])}(?!\d)"), f"<reply code {n}>"))
    names.naming = False
    out: dict[str, Any] = {}
    for table in order:
        if table == "stats_dirty":
            # A mark per writing statement that touched a school's figures, read as the set of schools
            # marked: how many statements wrote the rows is not what the report does.
            out[table] = {"schools marked": sorted({names.value(r["school_id"]) for r in added[table]})}
            continue
        if added[table] or gone[table]:
            out[table] = {"added": [names.value(r) for r in added[table]]}
            if gone[table]:
                out[table]["gone"] = sorted(
                    (names.value(r) for r in gone[table]), key=lambda r: json.dumps(r, sort_keys=True)
                )
    return out


async def _scenarios(kit: Kit) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # An ordinary report: the whole family reachable, the duty roster, a leader with a mobile.
    family = await kit.family()
    await kit.duty()
    await kit.leader_phone()
    body = {
        "child_id": str(family.child_id),
        "category": "missing",
        "severity": "severe",
        "summary": "午休后未回教室，校园内未找到",
        "location": "学校及周边",
        "occurred_at": (kit.clock.now() - timedelta(minutes=3)).isoformat(),
        "time_basis": "discovered",
        "first_actions": "全体值班教师分组寻找，已联系派出所",
    }
    known = {"child": family.child_id, **{f"guardian {k}": v for k, v in family.guardians.items()}}
    known |= {f"account {k}": v for k, v in family.accounts.items()}
    out["ordinary"] = await written(kit, body, known)

    # A late report: step 1's deadline (30 min) missed before the report.
    body["occurred_at"] = (kit.clock.now() - timedelta(minutes=45)).isoformat()
    body["category"] = "injury"
    out["late"] = await written(kit, body, known)

    # A held step, and a party with nobody to reach (a child with only a grandmother on the card).
    grandma = {"key": "grandma", "role": GuardianRole.entrusted_guardian, "relation": "祖母", "name": "王桂英"}
    lone = await kit.family([{**grandma, "phone": GRANDMA}])
    kit.advance(minutes=1)
    body = {
        "child_id": str(lone.child_id),
        "category": "injury",
        "severity": "moderate",
        "summary": "课间在操场摔倒，左手腕肿痛",
        "location": "学校操场",
        "occurred_at": kit.clock.now().isoformat(),
        "first_actions": "校医冷敷固定，班主任陪同",
        "holds": [{"step_no": 1, "minutes": 5}],
    }
    known = {"lone child": lone.child_id, **{f"lone guardian {k}": v for k, v in lone.guardians.items()}}
    out["held and unreachable"] = await written(kit, body, known)
    return out


async def test_one_report_writes_exactly_the_recorded_rows(kit):
    found = await _scenarios(kit)
    text = json.dumps(found, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    if RECORD:
        DATA.parent.mkdir(exist_ok=True)
        DATA.write_text(text, encoding="utf-8")
    recorded = json.loads(DATA.read_text(encoding="utf-8"))
    for scenario, tables in recorded.items():
        assert list(found[scenario]) == list(tables), f"{scenario}: tables written"
        for table, rows in tables.items():
            assert found[scenario][table] == rows, f"{scenario}: rows of {table}"
    assert list(found) == list(recorded)
