"""Importing this package registers every table on ``SQLModel.metadata`` (Alembic reads it from here)."""

from api.models import accounts, audit, children, escalation, guardians, incidents, notifications, organisations

__all__ = ["accounts", "audit", "children", "guardians", "organisations"]
__all__ += ["escalation", "incidents", "notifications"]
from api.models import roster  # noqa: E402  (花名册 import records)

__all__ += ["roster"]
from api.models import family_calls  # noqa: E402  (亲情电话)

__all__ += ["family_calls"]
from api.models import care  # noqa: E402  (结对帮扶, care records)

__all__ += ["care"]
from api.models import care_rhythm  # noqa: E402  (the rhythm of care work: rules, term calendar)

__all__ += ["care_rhythm"]

from api.models import plan  # noqa: E402  (工作计划, 关爱活动)

__all__ += ["plan"]
from api.models import term_summary  # noqa: E402  (工作总结)

__all__ += ["term_summary"]
from api.models import enrolment  # noqa: E402  (在校学生数 per term, for the statistics)

__all__ += ["enrolment"]
from api.models import stats_cache  # noqa: E402  (the statistics' pre-aggregates)

__all__ += ["stats_cache"]
