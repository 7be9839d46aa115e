"""The API as ``liushou serve`` runs it (one uvicorn process, its logging, no worker in it), with the clock
frozen on the synthetic county's day (:data:`bench.county.NOW`) so that "this month" is the county's.

    python -m bench.stats_app PORT [ISO-INSTANT]   (DATABASE_URL and the other settings from the environment)

With an instant (e.g. ``2026-11-24T16:00:01+00:00``, midnight in Shanghai) the clock is frozen there instead.
"""

import logging
import sys
from datetime import datetime

import uvicorn

from api.clock import FrozenClock
from api.logs import configure_logging
from api.main import create_app
from api.settings import get_settings
from bench.county import NOW


def main() -> None:
    configure_logging(logging.INFO)
    settings = get_settings()
    now = datetime.fromisoformat(sys.argv[2]) if len(sys.argv) > 2 else NOW
    app = create_app(settings, clock=FrozenClock(now), database_url=settings.database_url, migrate=False)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), proxy_headers=False, log_level="info", log_config=None)


if __name__ == "__main__":
    main()
