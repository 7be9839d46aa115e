"""The append-only audit log: every write, and every read of a child's personal details."""

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from api.models.base import timestamp_field
from api.models.row_security import COUNTY, ROLE, SCHOOLS, Policy, row_security


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_school_at", "school_id", "at"),
        sa.Index("ix_audit_log_resource", "resource_type", "resource_id", "at"),
        # Most who write an entry may not read it back (row-level security, below), and PostgreSQL checks
        # the read policy on the rows an INSERT ... RETURNING returns: entries go in without it, their ids left
        # to the column default (api/audit.py).
        {"implicit_returning": False},
    )

    id: int | None = Field(default=None, sa_type=sa.BigInteger, primary_key=True)
    at: datetime = timestamp_field(default_now=True)
    account_id: uuid.UUID | None = Field(default=None, index=True)
    role: str | None = Field(default=None, max_length=32)
    action: str = Field(max_length=64, description="create / update / delete / read / login / …")
    resource_type: str = Field(max_length=64)
    resource_id: str | None = Field(default=None, max_length=64)
    school_id: uuid.UUID | None = Field(default=None)
    county_id: uuid.UUID | None = Field(default=None, index=True)
    request_id: str | None = Field(default=None, max_length=64, description="ours, minted per request")
    client_request_id: str | None = Field(
        default=None, max_length=64, description="the X-Request-ID the client sent (its own; not trusted)"
    )
    client_ip: str | None = Field(default=None, max_length=64)
    changes: dict[str, Any] | None = Field(default=None, sa_type=JSONB)


# ---- row-level security (api/models/row_security.py) ----
# Anyone acting may add an entry (a family's reads are audited too); the log is read by those who answer for
# it: a school's admins (their school) and the bureau (its county's entries and those of its schools).
row_security(
    "audit_log",
    Policy("append", command="INSERT", using=None, check="true"),
    Policy(
        "read",
        command="SELECT",
        using=(
            f"({ROLE} = 'county_bureau' AND (county_id = {COUNTY} OR school_id = ANY ({SCHOOLS})))"
            f" OR ({ROLE} = 'school_admin' AND school_id = ANY ({SCHOOLS}))"
        ),
    ),
)


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    account_id: uuid.UUID | None
    role: str | None
    action: str
    resource_type: str
    resource_id: str | None
    school_id: uuid.UUID | None
    request_id: str | None
    client_request_id: str | None = None
    client_ip: str | None
    changes: dict[str, Any] | None
