"""Importing this package registers every table on ``SQLModel.metadata`` (Alembic reads it from here)."""

from api.models import accounts, audit, children, guardians, organisations

__all__ = ["accounts", "audit", "children", "guardians", "organisations"]
