"""The floor for bench/api_floor.py: the thinnest FastAPI + asyncpg app answering what our endpoints answer.

Not part of the service. One asyncpg pool, hand-written SQL, dicts for JSON, no ORM, no middleware:

* ``GET /children?school_id=…&class_id=…&limit=…`` — the class page with what each file lacks, one query;
* ``GET /children/{id}`` — one child's full file with what it lacks, one query;
* ``/duty/children…`` — the same, plus what the service must also do for each request: look up the login
  session and the account behind it (``X-Account-Id``, ``X-Session-Id``), and write the audit entry of the
  read in the same transaction (no token signature check, no scope rules);
* ``GET /care/todo`` — the teacher's to-do list: the statements the service runs for it (``FLOOR_TODO``: a
  pickle of SQL and parameters captured by bench/api_floor.py), replayed on one connection, rows as dicts;
  ``/duty/care/todo`` with the session look-up and the audit entry;
* ``POST /incidents`` — a bare insert of the rows one real report wrote (``FLOOR_TEMPLATE``: a pickle made
  by bench/api_floor.py), with fresh ids, in one transaction.

Run: ``FLOOR_DSN=postgresql://… FLOOR_TEMPLATE=… uvicorn bench.floor_app:app``.
"""

import json
import os
import pickle
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Header, HTTPException, Query, Request

from api.models.children import MISSING_LABELS, MissingItem
from api.models.organisations import class_label

PHONE = r"^(1[3-9][0-9]{9}|(010|02[0-9]|0[3-9][0-9]{2})-[2-9][0-9]{6,7}(-[0-9]{1,6})?)$"
BLANK = " \t\r\n\u3000"

LINKS = """
LEFT JOIN LATERAL (
    SELECT bool_or(cg.role = 'entrusted_guardian') AS entrusted,
           bool_or(cg.role = 'entrusted_guardian'
                   AND (coalesce(g.phone, '') ~ $PHONE OR coalesce(g.phone_alt, '') ~ $PHONE)) AS entrusted_phone,
           bool_or(cg.role = 'parent_away') AS away,
           bool_or(cg.role = 'parent_away'
                   AND (coalesce(g.phone, '') ~ $PHONE OR coalesce(g.phone_alt, '') ~ $PHONE)) AS away_phone
    FROM child_guardian cg JOIN guardian g ON g.id = cg.guardian_id
    WHERE cg.child_id = c.id AND cg.is_active
) l ON true
"""

LIST = (
    """
WITH page AS (
    SELECT c.id, row_number() OVER w AS n, count(*) OVER () AS total
    FROM child c JOIN school s ON s.id = c.school_id LEFT JOIN school_class k ON k.id = c.class_id
    WHERE c.school_id = $1 AND c.class_id = $2 AND c.status = 'enrolled'
    WINDOW w AS (ORDER BY s.name, c.school_id, k.grade NULLS LAST, k.name NULLS LAST, c.name_pinyin, c.name, c.id)
    ORDER BY n OFFSET 0 LIMIT $3
)
SELECT c.id, c.school_id, s.name AS school_name, c.class_id, k.grade, k.name AS class_name, c.name, c.sex,
       c.status, c.is_left_behind, c.parents_away, c.special_hardship, c.single_parent, c.struggling_learner,
       c.disability, c.needs_individual_plan, c.id_number_cipher, c.birth_date, c.home_address,
       c.guardianship_rating, c.left_behind_since, page.total, l.*
FROM page JOIN child c ON c.id = page.id JOIN school s ON s.id = c.school_id
LEFT JOIN school_class k ON k.id = c.class_id
"""
    + LINKS
    + "ORDER BY page.n"
).replace("$PHONE", "$4")

FILE = (
    """
SELECT c.*, s.name AS school_name, s.county_id, k.grade, k.name AS class_name, l.*
FROM child c JOIN school s ON s.id = c.school_id LEFT JOIN school_class k ON k.id = c.class_id
"""
    + LINKS
    + "WHERE c.id = $1 AND c.school_id = $2"
).replace("$PHONE", "$3")

PRINCIPAL = """
SELECT a.role, a.county_id, a.township_id, a.school_id, a.is_active, ls.revoked_at,
       ARRAY(SELECT id FROM school_class WHERE head_teacher_id = a.id
             UNION SELECT class_id FROM teaching_assignment WHERE account_id = a.id) AS class_ids
FROM account a JOIN login_session ls ON ls.account_id = a.id
WHERE a.id = $1 AND ls.id = $2
"""

AUDIT = """
INSERT INTO audit_log (at, account_id, role, action, resource_type, resource_id, school_id, county_id, request_id,
                       client_ip, changes)
VALUES (now(), $1, $2, $3, 'child', $4, $5, $6, $7, $8, $9)
"""

FLAGS = ("special_hardship", "single_parent", "struggling_learner", "disability", "needs_individual_plan")
FULL_COLUMNS = (
    "birth_date", "ethnicity", "id_number_masked", "household_registration", "home_address", "is_boarding",
    "health", "left_behind_since", "character", "habits", "interests", "study_notes", "guardian_relationship",
    "parent_contact_frequency", "guardianship_rating", *FLAGS, "notes", "status_reason", "status_changed_on",
    "created_at", "updated_at",
)  # fmt: skip


def missing(row: Any) -> list[dict[str, str]]:
    """The completeness rule of api/services/completeness.py over one row with its link facts."""
    items = []
    if row["id_number_cipher"] is None:
        items.append(MissingItem.missing_id_number)
    if row["birth_date"] is None:
        items.append(MissingItem.missing_birth_date)
    if not (row["home_address"] or "").strip(BLANK):
        items.append(MissingItem.missing_home_address)
    if row["class_id"] is None:
        items.append(MissingItem.missing_class)
    if row["is_left_behind"]:
        if not row["entrusted"]:
            items.append(MissingItem.missing_entrusted_guardian)
        elif not row["entrusted_phone"]:
            items.append(MissingItem.missing_entrusted_guardian_phone)
        if row["parents_away"] != "none":
            if not row["away"]:
                items.append(MissingItem.missing_parent_away)
            elif not row["away_phone"]:
                items.append(MissingItem.missing_parent_away_phone)
        if row["guardianship_rating"] is None:
            items.append(MissingItem.missing_guardianship_rating)
        if row["left_behind_since"] is None:
            items.append(MissingItem.missing_left_behind_since)
    return [{"code": item.value, "label": MISSING_LABELS[item]} for item in items]


def summary(row: Any) -> dict[str, Any]:
    lacks = missing(row)
    return {
        "id": row["id"],
        "school_id": row["school_id"],
        "school_name": row["school_name"],
        "class_id": row["class_id"],
        "class_label": class_label(row["grade"], row["class_name"]) if row["grade"] is not None else None,
        "grade": row["grade"],
        "name": row["name"],
        "sex": row["sex"],
        "status": row["status"],
        "is_left_behind": row["is_left_behind"],
        "parents_away": row["parents_away"],
        "flags": [flag for flag in FLAGS if row[flag]],
        "complete": not lacks,
        "missing": lacks,
    }


def full(row: Any) -> dict[str, Any]:
    out = summary(row) | {"detail": "full"} | {key: row[key] for key in FULL_COLUMNS}
    today = date.today()
    birth = row["birth_date"]
    out["age"] = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return out


class Template:
    """The rows of one real incident report, per table in the order they can be inserted, and how to copy
    them: every id of a copied row (and every reference to it) is fresh, unique text columns are redrawn."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            spec = pickle.load(f)
        self.tables: list[tuple[str, list[str], list[tuple[Any, ...]]]] = []
        self.ids: set[uuid.UUID] = set(spec["ids"])
        self.unique_text: dict[str, dict[str, int]] = spec["unique_text"]
        for table, columns, rows in spec["tables"]:
            self.tables.append((table, columns, rows))

    def copy(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        fresh = {old: uuid.uuid4() for old in self.ids}
        out = []
        for table, columns, rows in self.tables:
            redraw = self.unique_text.get(table, {})
            copied = []
            for row in rows:
                values = []
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, uuid.UUID):
                        value = fresh.get(value, value)
                    elif column in redraw and isinstance(value, str):
                        size = min(redraw[column], max(len(value), 8))
                        value = secrets.token_hex(size)[:size].upper()
                    values.append(value)
                copied.append(tuple(values))
            out.append((table, copied))
        return out

    def statements(self) -> dict[str, str]:
        return {
            table: f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})"
            for table, columns, _ in self.tables
        }


def _load(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["FLOOR_DSN"], min_size=10, max_size=20)
    path = os.environ.get("FLOOR_TEMPLATE")
    app.state.template = Template(path) if path else None
    app.state.inserts = app.state.template.statements() if path else {}
    todo = os.environ.get("FLOOR_TODO")
    if todo:
        app.state.todo = _load(todo)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/children")
async def list_children(
    request: Request, school_id: uuid.UUID, class_id: uuid.UUID, limit: int = Query(50, ge=1, le=200)
) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(LIST, school_id, class_id, limit, PHONE)
    return {"data": [summary(r) for r in rows], "count": rows[0]["total"] if rows else 0}


@app.get("/children/{child_id}")
async def read_child(request: Request, child_id: uuid.UUID, school_id: uuid.UUID) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(FILE, child_id, school_id, PHONE)
    if row is None:
        raise HTTPException(404)
    return full(row)


async def _principal(conn: asyncpg.Connection, account_id: uuid.UUID, session_id: uuid.UUID) -> Any:
    principal = await conn.fetchrow(PRINCIPAL, account_id, session_id)
    if principal is None or principal["revoked_at"] is not None or not principal["is_active"]:
        raise HTTPException(401)
    return principal


@app.get("/duty/children")
async def duty_list_children(
    request: Request,
    school_id: uuid.UUID,
    class_id: uuid.UUID,
    limit: int = Query(50, ge=1, le=200),
    x_account_id: uuid.UUID = Header(),
    x_session_id: uuid.UUID = Header(),
) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        principal = await _principal(conn, x_account_id, x_session_id)
        rows = await conn.fetch(LIST, principal["school_id"], class_id, limit, PHONE)
        data = [summary(r) for r in rows]
        count = rows[0]["total"] if rows else 0
        detail = {"class_id": str(class_id), "count": count, "child_ids": [str(d["id"]) for d in data]}
        await conn.execute(
            AUDIT, x_account_id, principal["role"], "child.list", None, principal["school_id"],
            principal["county_id"], uuid.uuid4().hex, request.client.host if request.client else None,
            json.dumps(detail),
        )  # fmt: skip
    return {"data": data, "count": count}


@app.get("/duty/children/{child_id}")
async def duty_read_child(
    request: Request, child_id: uuid.UUID, x_account_id: uuid.UUID = Header(), x_session_id: uuid.UUID = Header()
) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        principal = await _principal(conn, x_account_id, x_session_id)
        row = await conn.fetchrow(FILE, child_id, principal["school_id"], PHONE)
        if row is None:
            raise HTTPException(404)
        await conn.execute(
            AUDIT, x_account_id, principal["role"], "child.read", str(child_id), row["school_id"], row["county_id"],
            uuid.uuid4().hex, request.client.host if request.client else None, None,
        )  # fmt: skip
    return full(row)


async def _todo(conn: asyncpg.Connection, statements: list[tuple[str, list[Any]]]) -> list[list[dict[str, Any]]]:
    return [[dict(r) for r in await conn.fetch(sql, *params)] for sql, params in statements]


@app.get("/care/todo")
async def todo(request: Request) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn:
        return {"results": await _todo(conn, request.app.state.todo)}


@app.get("/duty/care/todo")
async def duty_todo(request: Request, x_account_id: uuid.UUID = Header(), x_session_id: uuid.UUID = Header()) -> Any:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        principal = await _principal(conn, x_account_id, x_session_id)
        results = await _todo(conn, request.app.state.todo)
        await conn.execute(
            AUDIT, x_account_id, principal["role"], "care.todo.read", None, principal["school_id"],
            principal["county_id"], uuid.uuid4().hex, request.client.host if request.client else None,
            json.dumps({"items": sum(len(rows) for rows in results)}),
        )  # fmt: skip
    return {"results": results}


@app.post("/incidents", status_code=201)
async def report(request: Request) -> dict[str, Any]:
    body = await request.json()
    template: Template = request.app.state.template
    copied = template.copy()
    inserts = request.app.state.inserts
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        for table, rows in copied:
            if len(rows) == 1:
                await conn.execute(inserts[table], *rows[0])
            else:
                await conn.executemany(inserts[table], rows)
    columns = next(columns for table, columns, _ in template.tables if table == "incident")
    incident = dict(zip(columns, next(rows for table, rows in copied if table == "incident")[0], strict=True))
    return {
        "id": incident.get("id"),
        "case_code": incident.get("case_code"),
        "child_id": body.get("child_id"),
        "reported_at": datetime.now(UTC),
        "steps": len(next((rows for table, rows in copied if table == "escalation_step"), [])),
    }
