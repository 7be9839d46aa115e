"""All configuration in one pydantic-settings class, read from the environment (prefix ``LIUSHOU_``)."""

import ipaddress
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
# 32 zero-ish bytes, base64; only acceptable in development and tests.
DEV_FIELD_KEYS = "dev:ZGV2LW9ubHktZmllbGQta2V5LTMyLWJ5dGVzLWxvbmc="
DEV_CALLBACK_SECRET = "dev-only-callback-secret"
DEV_ACK_LINK_KEYS = "dev:ZGV2LW9ubHktYWNrLWxpbmsta2V5LTMyLWJ5dGVzISE="


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIUSHOU_", env_file=".env", extra="ignore")

    environment: Environment = Environment.development
    # Unprefixed on purpose: DATABASE_URL is what every tool and platform sets.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "LIUSHOU_DATABASE_URL")
    )
    embedded_pg_dir: Path = Path(".liushou/pgdata")
    db_pool_size: int = 10
    db_echo: bool = False

    public_base_url: str = "http://127.0.0.1:8000"
    cors_origins: list[str] = []

    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str = "liushou"
    jwt_audience: str = "liushou-api"
    access_token_minutes: int = Field(default=15, ge=1, le=120)
    refresh_token_days: int = Field(default=30, ge=1, le=180)
    binding_ticket_minutes: int = Field(default=10, ge=1, le=60)
    invite_days: int = Field(default=7, ge=1, le=60)

    # argon2 cost; tests lower it so that a suite creating many accounts stays fast.
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536

    # Login limits (docs/security.md). Failures of one account from one address: tight.
    login_max_failures_per_account_address: int = Field(default=5, ge=1, le=1000)
    # Failures of one account from every address: looser. Neither this nor the next limit applies at the
    # account's known addresses (a successful login from there within login_known_address_days).
    login_max_failures_per_account: int = Field(default=20, ge=1, le=10000)
    # Failures from one address across accounts (password spraying).
    login_max_failures_per_ip: int = Field(default=30, ge=1, le=10000)
    login_window_minutes: int = Field(default=15, ge=1, le=1440)
    login_known_address_days: int = Field(default=90, ge=0, le=3650)
    # Reverse proxies whose X-Forwarded-For is believed (addresses or networks); none by default.
    trusted_proxies: list[str] = []

    # Field-encryption key ring "id:base64key,…"; the last is active unless field_key_active names one.
    field_keys: str = DEV_FIELD_KEYS
    field_key_active: str | None = None

    wechat_base_url: str = "https://api.weixin.qq.com"
    wechat_appid: str = "wx-dev-appid"
    wechat_secret: str = "wx-dev-secret"
    wechat_subscribe_template_id: str = "liushou-emergency-template"
    # The family-call template (亲情通话提醒), for reminders and cancellations: thing1 the line, time2 the time,
    # thing3 the room or what happened. Never the child (docs/architecture.md, family calls).
    wechat_family_call_template_id: str = "liushou-family-call-template"
    http_timeout_seconds: float = 10.0

    sms_base_url: str = "http://127.0.0.1:9100/sms"
    sms_api_key: str = "dev-sms-key"
    voice_base_url: str = "http://127.0.0.1:9100/voice"
    voice_api_key: str = "dev-voice-key"
    # The care digest's WeChat template (关爱工作提醒): thing1 what, number2 overdue, number3 due,
    # character_string4 the week, thing5 a hint — counts only, never a child's name.
    wechat_care_digest_template_id: str = "liushou-care-digest-template"
    callback_secret: str = DEV_CALLBACK_SECRET
    # Acknowledgement-link key ring "kid:base64key,…" (own keys, not the JWT secret's): the first signs, all verify.
    ack_link_keys: str = DEV_ACK_LINK_KEYS

    run_worker_in_process: bool = True
    # The escalation engine (docs/escalation.md).
    escalation_poll_seconds: float = Field(default=1.0, gt=0, le=30)
    # Claimed per pass; a message still waiting for a send slot at its deadline is released unsent.
    escalation_batch_size: int = Field(default=100, ge=1, le=5000)
    escalation_send_concurrency: int = Field(default=50, ge=1, le=1000)
    # A claimed message not recorded within this time is taken over by another worker; longer than a send.
    escalation_lease_seconds: int = Field(default=60, ge=5, le=3600)
    # Everything one send may take — waiting for a free slot, the WeChat token, every HTTP phase — counted
    # from the claim; unset: half the lease. Must end well inside the lease (validated below).
    escalation_send_deadline_seconds: float | None = Field(default=None, gt=0, le=3600)
    worker_heartbeat_seconds: int = Field(default=5, ge=1, le=60)
    worker_stale_seconds: int = Field(default=60, ge=5, le=3600)
    # Readiness wants a fresh worker heartbeat; None: in production always, elsewhere when the worker runs here.
    worker_heartbeat_check: bool | None = None
    # If set, /metrics wants "Authorization: Bearer <token>".
    metrics_token: str | None = None

    # The bureau's statistics (docs/statistics.md): a PostgreSQL replica to read them from, so that heavy
    # reads never slow a school's emergency (unset: the main database), and the small-count threshold —
    # cells counting fewer children than this (but some) are suppressed.
    stats_database_url: str | None = None
    stats_suppression_threshold: int = Field(default=5, ge=0, le=100)
    # The statistics' pre-aggregates (api/services/stats/preaggregate.py): a school's figures are used while its
    # oldest change not yet counted is younger than this; past it, the school is computed afresh. The refresher
    # (``liushou stats-refresh``) looks for changes every ``stats_refresh_seconds``.
    stats_max_stale_seconds: int = Field(default=300, ge=0, le=3600)
    stats_refresh_seconds: int = Field(default=60, ge=1, le=3600)
    # In the last ``stats_ahead_minutes`` before Shanghai midnight the refresher also keeps tomorrow's figures, and
    # the warm-up tomorrow's answers, so that the first reads of the new day find them kept.
    stats_ahead_minutes: int = Field(default=90, ge=0, le=720)
    # Built answers kept in ``stats_answer`` (api/services/stats/answers.py) are served while their as-of is within
    # ``stats_max_stale_seconds``; after each refresher pass the warm-up rebuilds those asked for within
    # ``stats_warm_days`` whose figures moved (and each county's and township's standard table), at most
    # ``stats_warm_seconds`` of work per pass.
    stats_warm_days: int = Field(default=7, ge=0, le=366)
    stats_warm_seconds: int = Field(default=30, ge=0, le=3600)
    # Where finished exports are kept by what they were written from (api/services/stats/exports/kept.py);
    # unset: a folder in the system's temporary directory.
    stats_export_dir: str | None = None

    @field_validator("ack_link_keys")
    @classmethod
    def _ack_link_keys_parse(cls, value: str) -> str:
        from api.ack_links import link_keys  # a plain module; imported late to keep settings light

        link_keys(value)  # a bad ring is refused at start-up, not when the first link is sent
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # raises ValueError: a typo must not trust the world
        return value

    @property
    def send_deadline_seconds(self) -> float:
        if self.escalation_send_deadline_seconds is not None:
            return self.escalation_send_deadline_seconds
        return self.escalation_lease_seconds / 2

    @property
    def send_deadline_margin_seconds(self) -> float:
        """What the lease must keep after a send's deadline: the time to record its outcome."""
        return max(2.0, self.escalation_lease_seconds / 4)

    @model_validator(mode="after")
    def _send_deadline_fits_the_lease(self) -> Self:
        latest = self.escalation_lease_seconds - self.send_deadline_margin_seconds
        if self.send_deadline_seconds > latest:
            raise ValueError(
                f"LIUSHOU_ESCALATION_SEND_DEADLINE_SECONDS ({self.send_deadline_seconds:g}) must end at least"
                f" {self.send_deadline_margin_seconds:g} s before the lease (LIUSHOU_ESCALATION_LEASE_SECONDS"
                f" {self.escalation_lease_seconds}): at most {latest:g}, else a second worker could send again"
            )
        return self

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Self:
        if self.environment == Environment.production:
            weak = [
                name
                for name, value, dev in (
                    ("LIUSHOU_JWT_SECRET", self.jwt_secret, DEV_JWT_SECRET),
                    ("LIUSHOU_FIELD_KEYS", self.field_keys, DEV_FIELD_KEYS),
                    ("LIUSHOU_CALLBACK_SECRET", self.callback_secret, DEV_CALLBACK_SECRET),
                    ("LIUSHOU_ACK_LINK_KEYS", self.ack_link_keys, DEV_ACK_LINK_KEYS),
                )
                if value == dev
            ]
            if weak:
                raise ValueError(f"development secrets must be replaced in production: {', '.join(weak)}")
            if len(self.jwt_secret) < 32:
                raise ValueError("LIUSHOU_JWT_SECRET must be at least 32 characters")
            if self.database_url is None:
                raise ValueError("DATABASE_URL is required in production (the embedded database is for dev)")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
