"""花名册 roster import and export: the record of each import and the answers the API gives.

The columns of the roster itself (the template a school fills in) are defined in
:mod:`api.services.roster.columns`; ``docs/roster-template.md`` documents them for school clerks.
"""

import uuid
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Field, SQLModel

from api.models.base import fk_field, id_field, timestamp_field
from api.models.row_security import ROLE, Policy, of_school, row_security


class ImportBatch(SQLModel, table=True):
    """One roster import that was written: who imported which file into which school, when, with what result.

    Dry runs and rejected files write nothing, so they leave no batch.
    """

    __tablename__ = "import_batch"
    __table_args__ = (sa.Index("ix_import_batch_school_at", "school_id", "created_at"),)

    id: uuid.UUID = id_field()
    school_id: uuid.UUID = fk_field("school.id", index=False)
    account_id: uuid.UUID | None = fk_field("account.id", nullable=True, index=False)
    file_name: str = Field(max_length=255, description="上传的文件名")
    file_format: str = Field(max_length=8, description="xlsx / csv")
    file_sha256: str = Field(max_length=64, description="sha256 of the uploaded bytes (which file it was)")
    row_count: int = Field(ge=0, description="学生行数")
    children_created: int = Field(default=0, ge=0)
    children_updated: int = Field(default=0, ge=0)
    children_unchanged: int = Field(default=0, ge=0)
    children_re_enrolled: int = Field(default=0, ge=0)
    guardians_created: int = Field(default=0, ge=0)
    guardians_reused: int = Field(default=0, ge=0)
    guardians_updated: int = Field(default=0, ge=0)
    classes_created: int = Field(default=0, ge=0)
    created_at: datetime = timestamp_field()


# ---- API schemas -------------------------------------------------------------------------------------


class RosterImportReport(BaseModel):
    """What an import did (or, for a dry run, would do). Row errors answer 422 ``roster_invalid`` instead."""

    dry_run: bool = Field(description="true: validated only, nothing was written")
    batch_id: uuid.UUID | None = Field(description="the import record (null for a dry run)")
    file_format: str = Field(description="xlsx / csv")
    rows: int = Field(description="学生行数 (blank rows are skipped)")
    children_created: int = Field(description="新建档案")
    children_updated: int = Field(description="已有档案, 有变化 (fields, class or guardians)")
    children_unchanged: int = Field(description="已有档案, 无变化")
    children_re_enrolled: int = Field(description="已毕业或离校的学生重新在册 (included in updated)")
    guardians_created: int = Field(description="新登记的家长/监护人")
    guardians_reused: int = Field(description="已登记的家长/监护人 (same school, name and phone)")
    guardians_updated: int = Field(description="已登记的家长/监护人, 信息有变化")
    classes_created: list[str] = Field(description="自动新建的班级 (create_classes=true), e.g. 三年级4班")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "dry_run": False,
                    "batch_id": "0b6f1f7e-3f0a-4a53-9b1e-2f1d8c1e9a10",
                    "file_format": "xlsx",
                    "rows": 122,
                    "children_created": 40,
                    "children_updated": 12,
                    "children_unchanged": 70,
                    "children_re_enrolled": 0,
                    "guardians_created": 96,
                    "guardians_reused": 210,
                    "guardians_updated": 5,
                    "classes_created": [],
                }
            ]
        }
    }


# ---- row-level security (api/models/row_security.py) ----
# 花名册 import records: for the school's admins and the bureau and township above it, not for teachers.
row_security("import_batch", Policy("managers", using=f"{ROLE} <> 'teacher' AND {of_school()}"))


class ImportBatchPublic(BaseModel):
    id: uuid.UUID
    school_id: uuid.UUID
    account_id: uuid.UUID | None
    file_name: str
    file_format: str
    file_sha256: str
    row_count: int
    children_created: int
    children_updated: int
    children_unchanged: int
    children_re_enrolled: int
    guardians_created: int
    guardians_reused: int
    guardians_updated: int
    classes_created: int
    created_at: datetime
