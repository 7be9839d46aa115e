"""`liushou serve --demo` as a user runs it: the banner tells the truth about every account it lists, and
provider URLs that were configured are used (and said to be), the built-in fakes only for the rest."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from api.cli import _demo_providers
from api.demo.seed import DEMO_PASSWORD
from api.settings import Settings

ACCOUNT_LINE = re.compile(r"^  (\S+)\s+(\S+)\s+\((\w+)\)$")
FAMILY_LINE = re.compile(
    r"^A family account, bound to WeChat: (\S+), (\S+) \((.+)\) of (\S+) at (\S+) — "
    r"POST /auth/wechat/login with code '(\S+)'\.$"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def who_am_i(http: httpx.Client, headers: dict[str, str]) -> dict:
    """GET /auth/me right after a login: the login is committed before its reply, so this sees it at once."""
    r = http.get("/auth/me", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


class Serve:
    """``python -m api.cli serve --demo`` in a subprocess; its stdout collected line by line."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LIUSHOU_")}
        self.env = {
            **clean,
            "DATABASE_URL": database_url,
            "LIUSHOU_ARGON2_TIME_COST": "1",
            "LIUSHOU_ARGON2_MEMORY_COST": "1024",
            "LIUSHOU_RUN_WORKER_IN_PROCESS": "false",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.lines: list[str] = []

    def __enter__(self) -> "Serve":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--demo", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited: {self.lines}"
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve --demo did not come up")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_demo_banner_tells_the_truth_and_configured_providers_are_honoured(database_url, fake_providers):
    configured_sms = fake_providers.sms_base_url
    with Serve(database_url, LIUSHOU_SMS_BASE_URL=configured_sms) as serve:
        banner = list(serve.lines)
        with httpx.Client(base_url=serve.base_url, timeout=30) as http:
            accounts = [m.groups() for m in map(ACCOUNT_LINE.match, banner) if m]
            assert len(accounts) >= 11
            for username, display_name, role in accounts:
                r = http.post("/auth/login", json={"username": username, "password": DEMO_PASSWORD})
                assert r.status_code == 200, (username, r.text)
                me = who_am_i(http, {"Authorization": f"Bearer {r.json()['access_token']}"})
                assert (me["username"], me["display_name"], me["role"]) == (username, display_name, role)

            (family,) = [m.groups() for m in map(FAMILY_LINE.match, banner) if m]
            name, relation, relation_en, children, school, code = family
            assert relation in ("祖母", "外祖母") and relation_en == "grandmother"
            r = http.post("/auth/wechat/login", json={"code": code})
            assert r.status_code == 200 and r.json()["status"] == "logged_in", r.text
            headers = {"Authorization": f"Bearer {r.json()['tokens']['access_token']}"}
            me = who_am_i(http, headers)
            assert me["role"] == "family" and me["display_name"] == name
            mine = http.get("/me/children", headers=headers).json()
            assert "、".join(c["name"] for c in mine) == children
            assert {c["relation"] for c in mine} == {relation} and {c["school_name"] for c in mine} == {school}

    assert f"SMS: {configured_sms} (LIUSHOU_SMS_BASE_URL, as configured)" in banner
    fakes = {line.split(":", 1)[0]: line for line in banner if "built-in fake provider at" in line}
    assert set(fakes) == {"WeChat", "voice"}
    assert fakes["WeChat"].endswith("/wechat") and configured_sms not in fakes["WeChat"]


@pytest.mark.parametrize(
    "configured", [set(), {"wechat_base_url"}, {"wechat_base_url", "sms_base_url", "voice_base_url"}]
)
def test_demo_providers_replace_only_the_channels_not_configured(configured):
    values = {field: f"https://provider.example/{field}" for field in configured}
    settings = Settings(**values)  # type: ignore[arg-type]
    run_with, fake, lines = _demo_providers(settings, "127.0.0.1", 8000)
    try:
        for field in ("wechat_base_url", "sms_base_url", "voice_base_url"):
            if field in configured:
                assert getattr(run_with, field) == values[field]
            else:
                assert fake is not None and getattr(run_with, field).startswith(fake.base_url)
        assert (fake is None) == (len(configured) == 3)
        assert sum("as configured" in line for line in lines) == len(configured)
        assert any("WeChat login in the demo" in line for line in lines) == ("wechat_base_url" not in configured)
    finally:
        if fake is not None:
            fake.stop()
