"""Accounts, login sessions with rotating refresh tokens, invites, and login throttling."""

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from api.models.base import SENSITIVE, audited, enum_type, fk_field, id_field, timestamp_field
from api.models.row_security import ACCOUNT, COUNTY, ROLE, SCHOOLS, TOWNSHIP, Policy, row_security, unscoped


class Role(StrEnum):
    """Who an account is; each role sees only its own part of the county."""

    platform_admin = "platform_admin"  # 平台管理员
    county_bureau = "county_bureau"  # 县教育局
    township_official = "township_official"  # 镇党委政府
    school_admin = "school_admin"  # 学校管理员 / 领导小组
    teacher = "teacher"  # 班主任 / 任课教师 / 代理家长
    family = "family"  # 在外务工家长 / 委托监护人


ROLE_LABELS = {
    Role.platform_admin: "平台管理员",
    Role.county_bureau: "县教育局",
    Role.township_official: "乡镇政府",
    Role.school_admin: "学校管理员",
    Role.teacher: "教师",
    Role.family: "家长/监护人",
}


@audited("account")
class Account(SQLModel, table=True):
    __tablename__ = "account"
    __table_args__ = (
        sa.CheckConstraint(
            "(role <> 'county_bureau' OR county_id IS NOT NULL)"
            " AND (role <> 'township_official' OR township_id IS NOT NULL)"
            " AND (role NOT IN ('school_admin', 'teacher') OR school_id IS NOT NULL)",
            name="role_scope",
        ),
    )

    id: uuid.UUID = id_field()
    role: Role = Field(sa_type=enum_type(Role, 32), index=True)
    display_name: str = Field(max_length=64)
    username: str | None = Field(default=None, max_length=64, unique=True)
    password_hash: str | None = Field(default=None, max_length=256, sa_column_kwargs=SENSITIVE)
    phone: str | None = Field(default=None, max_length=32, description="值班/联系电话")
    county_id: uuid.UUID | None = fk_field("county.id", nullable=True)
    township_id: uuid.UUID | None = fk_field("township.id", nullable=True)
    school_id: uuid.UUID | None = fk_field("school.id", nullable=True)
    wechat_openid: str | None = Field(default=None, max_length=128, unique=True, sa_column_kwargs=SENSITIVE)
    wechat_unionid: str | None = Field(default=None, max_length=128, index=True, sa_column_kwargs=SENSITIVE)
    is_active: bool = Field(default=True)
    is_counsellor: bool = Field(default=False, description="心理辅导教师: reads and writes counselling records")
    created_at: datetime = timestamp_field(default_now=True)
    last_login_at: datetime | None = timestamp_field(nullable=True)


class LoginSession(SQLModel, table=True):
    """One login (password or WeChat); its refresh tokens rotate, logout or token reuse revokes it."""

    __tablename__ = "login_session"

    id: uuid.UUID = id_field()
    account_id: uuid.UUID = fk_field("account.id", ondelete="CASCADE")
    method: str = Field(max_length=16, description="password | wechat")
    created_at: datetime = timestamp_field(default_now=True)
    revoked_at: datetime | None = timestamp_field(nullable=True)
    revoked_reason: str | None = Field(default=None, max_length=32)
    client_ip: str | None = Field(default=None, max_length=64)


class RefreshToken(SQLModel, table=True):
    __tablename__ = "refresh_token"

    id: uuid.UUID = id_field()
    session_id: uuid.UUID = fk_field("login_session.id", ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True, description="sha256 hex; the token itself is never stored")
    created_at: datetime = timestamp_field(default_now=True)
    expires_at: datetime = timestamp_field()
    used_at: datetime | None = timestamp_field(nullable=True)


class InviteKind(StrEnum):
    staff = "staff"  # a teacher or school admin binds WeChat to a new staff account
    guardian = "guardian"  # a parent or entrusted guardian binds to their guardian record


@audited("invite")
class Invite(SQLModel, table=True):
    """A one-time invite code issued by a school admin; only its hash is stored."""

    __tablename__ = "invite"

    id: uuid.UUID = id_field()
    code_hash: str = Field(max_length=64, unique=True, sa_column_kwargs=SENSITIVE)
    kind: InviteKind = Field(sa_type=enum_type(InviteKind, 16))
    school_id: uuid.UUID = fk_field("school.id")
    role: Role = Field(sa_type=enum_type(Role, 32))
    display_name: str | None = Field(default=None, max_length=64)
    # Filled for guardian invites (the archive adds the foreign key to guardian).
    guardian_id: uuid.UUID | None = Field(default=None, index=True)
    created_by_id: uuid.UUID = fk_field("account.id")
    created_at: datetime = timestamp_field(default_now=True)
    expires_at: datetime = timestamp_field()
    used_at: datetime | None = timestamp_field(nullable=True)
    used_by_id: uuid.UUID | None = fk_field("account.id", nullable=True)


class LoginThrottle(SQLModel, table=True):
    """Failed password logins counted per bucket (account+address, account, address) in a fixed window.

    One row per bucket, locked while an attempt is admitted, so parallel guesses cannot slip past the limit
    (docs/security.md)."""

    __tablename__ = "login_throttle"

    key: str = Field(primary_key=True, max_length=160, description="aip:<name>|<addr>, acct:<name> or ip:<addr>")
    window_start: datetime = timestamp_field(index=True)
    failures: int = Field(default=0, ge=0)


# ---- row-level security (api/models/row_security.py) ----
# Staff see the accounts of their area (the bureau: its county; a township: its township; school staff: their
# school); a family sees only its own account.
row_security(
    "account",
    Policy(
        "scoped",
        using=(
            f"({ROLE} = 'county_bureau' AND county_id = {COUNTY})"
            f" OR ({ROLE} = 'township_official' AND township_id = {TOWNSHIP})"
            f" OR ({ROLE} IN ('school_admin', 'teacher') AND school_id = ANY ({SCHOOLS}))"
            f" OR ({ROLE} = 'family' AND id = {ACCOUNT})"
        ),
    ),
)
# Invites are issued by a school's admins (and seen by the bureau and the township), never by teachers.
# A head teacher may also hand a family of its class a guardian invite (the service checks the class), without
# seeing the invites on file.
row_security(
    "invite",
    Policy("managers", using=f"{ROLE} <> 'teacher' AND school_id = ANY ({SCHOOLS})"),
    Policy(
        "teacher_new",
        command="INSERT",
        using=None,
        check=f"{ROLE} = 'teacher' AND kind = 'guardian' AND school_id = ANY ({SCHOOLS})",
    ),
)
unscoped(
    "login_session",
    "reached by sign-in, refresh and logout only, each by the id of the caller's own session or as the system",
)
unscoped("refresh_token", "read by token hash during a refresh, which runs as the system; no listing exists")
unscoped("login_throttle", "failure counters keyed by name/address, written before anyone is signed in")


# ---- API schemas -------------------------------------------------------------------------------------


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="access token lifetime in seconds")


class PasswordLogin(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"username": "shiqiao-admin", "password": "liushou-demo-2026"}]}
    )

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "b3Jp…(the refresh_token from login)"}]}
    )

    refresh_token: str = Field(min_length=16, max_length=256)


class WechatLogin(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"code": "demo-grandma"}]})

    code: str = Field(min_length=1, max_length=128, description="wx.login() 返回的 code")


class WechatLoginResult(BaseModel):
    status: str = Field(description="logged_in | unbound")
    tokens: TokenPair | None = None
    binding_ticket: str | None = Field(
        default=None, description="未绑定的微信用户: 短期绑定凭证, 与邀请码一起提交到 /auth/wechat/bind"
    )


class WechatBind(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"binding_ticket": "eyJhbGciOi…", "invite_code": "K7QW2M9XPA"}]}
    )

    binding_ticket: str = Field(min_length=16, max_length=2048)
    invite_code: str = Field(min_length=6, max_length=64)


class AccountPublic(BaseModel):
    id: uuid.UUID
    role: Role
    display_name: str
    username: str | None
    phone: str | None
    county_id: uuid.UUID | None
    township_id: uuid.UUID | None
    school_id: uuid.UUID | None
    is_active: bool
    wechat_bound: bool


class AccountCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "role": "teacher",
                    "display_name": "刘芳老师",
                    "username": "teacher-liu",
                    "password": "a long passphrase",
                    "school_id": "5b1f0d2e-0000-4000-8000-000000000001",
                }
            ]
        }
    )

    role: Role
    display_name: str = Field(min_length=1, max_length=64)
    username: str | None = Field(default=None, min_length=3, max_length=64, regex=r"^[A-Za-z0-9_.\-]+$")
    password: str | None = Field(default=None, min_length=10, max_length=256)
    phone: str | None = Field(default=None, max_length=32)
    county_id: uuid.UUID | None = None
    township_id: uuid.UUID | None = None
    school_id: uuid.UUID | None = None


class InviteCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "teacher", "display_name": "刘芳老师"}]})

    role: Role = Field(default=Role.teacher, description="teacher 或 school_admin")
    display_name: str | None = Field(default=None, max_length=64)


class InviteIssued(BaseModel):
    id: uuid.UUID
    code: str = Field(description="一次性邀请码; 只在此时显示一次")
    expires_at: datetime
