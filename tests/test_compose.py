"""No Docker engine runs here, so the compose file is checked for its wiring instead of started."""

from pathlib import Path
from urllib.parse import urlsplit

import yaml

from api.cli import app as cli

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _resolve(value: str, env: dict[str, str]) -> str:
    """Expand ${VAR:?msg} / ${VAR:-default} the way compose does, for the variables given."""
    import re

    def repl(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env:
            return env[name]
        if op == ":-":
            return arg
        raise AssertionError(f"compose would refuse to start without {name}")

    return re.sub(r"\$\{(\w+)(:[-?])?([^}]*)\}", repl, value)


def test_compose_has_database_migration_api_and_worker():
    services = _compose()["services"]
    assert set(services) >= {"db", "migrate", "api", "worker"}
    assert services["worker"]["command"] == ["liushou", "worker"]
    assert services["migrate"]["command"] == ["liushou", "migrate"]
    assert services["api"]["command"][:2] == ["liushou", "serve"]


def test_api_and_worker_reach_the_compose_database_with_its_credentials():
    compose = _compose()
    env = {
        "POSTGRES_PASSWORD": "pw",
        "LIUSHOU_JWT_SECRET": "j" * 40,
        "LIUSHOU_FIELD_KEYS": "k",
        "LIUSHOU_CALLBACK_SECRET": "c",
    }
    db = compose["services"]["db"]["environment"]
    for name in ("api", "worker", "migrate"):
        service = compose["services"][name]
        url = urlsplit(_resolve(service["environment"]["DATABASE_URL"], env))
        assert url.scheme == "postgresql+asyncpg"
        assert url.hostname == "db" and url.port == 5432
        assert url.username == db["POSTGRES_USER"] and url.password == _resolve(db["POSTGRES_PASSWORD"], env)
        assert url.path == f"/{db['POSTGRES_DB']}"
        assert service["environment"]["LIUSHOU_ENVIRONMENT"] == "production"
        assert service["environment"]["LIUSHOU_RUN_WORKER_IN_PROCESS"] == "false"


def test_nothing_starts_before_the_database_is_healthy_and_migrated():
    services = _compose()["services"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in services["db"]


def test_secrets_are_required_not_defaulted():
    env = _compose()["x-app-env"]
    for name in ("LIUSHOU_JWT_SECRET", "LIUSHOU_FIELD_KEYS", "LIUSHOU_CALLBACK_SECRET", "LIUSHOU_ACK_LINK_KEYS"):
        assert ":?" in env[name], f"{name} must be required"


def test_the_commands_compose_runs_exist_in_the_cli():
    names = {c.name or c.callback.__name__ for c in cli.registered_commands}
    for service in _compose()["services"].values():
        command = service.get("command")
        if command and command[0] == "liushou":
            assert command[1] in names, f"compose runs `liushou {command[1]}` which the CLI does not have"


def test_the_image_installs_the_locked_dependencies():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile and "alembic" in dockerfile
