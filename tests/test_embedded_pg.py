"""The embedded PostgreSQL stops with the process that started it, and a leftover one never blocks the next start.

Real processes throughout: ``liushou serve`` started as a user starts it, stopped by real signals, killed with
SIGKILL; servers started from a copy of the pgserver installation that is then deleted; a frozen server.
"""

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from api import embedded_pg
from api.embedded_pg import EmbeddedPostgresError, read_postmaster, read_users, release, start_embedded

ROOT = Path(__file__).resolve().parents[1]
BOOT_TIMEOUT = 180.0  # a serve process on this shared, busy machine: imports, initdb, migrations, demo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(LIUSHOU_EMBEDDED_PG_DIR=str(data_dir), LIUSHOU_ARGON2_TIME_COST="1", LIUSHOU_ARGON2_MEMORY_COST="1024")
    return env


class Serve:
    """A ``liushou serve`` process on a data folder, its output in a file."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.port = _free_port()
        self.log = data_dir.parent / f"serve-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port), *args],
                cwd=ROOT,
                env=_env(data_dir),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def readyz(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=10)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}:\n{self.output}"
            try:
                if self.readyz().status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve never became ready:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"serve did not stop within {timeout} s:\n{self.output}") from None


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """Every PostgreSQL process working in this data folder (the postmaster and its children)."""
    found = []
    for proc in psutil.process_iter(["name", "cwd", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "postgres" not in (proc.info["name"] or ""):
            continue
        if proc.info["cwd"] == str(data_dir):
            found.append(proc)
    return found


def running(pid: int) -> bool:
    """Whether the process runs (one that has exited may linger a moment as a zombie until init reaps it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_no_postgres(data_dir: Path) -> None:
    assert not (data_dir / "postmaster.pid").exists(), "postmaster.pid left behind"
    assert postgres_processes(data_dir) == []


def wait_no_postgres(data_dir: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while postgres_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: each pytest session on the machine makes pytest-of-<user> private again,
    # and as root the server runs as pgserver's own user, which must reach its folder.
    folder = Path(tempfile.mkdtemp(prefix="liushou-pgtest-")) / "pgdata"
    yield folder
    # Whatever a failing test left running is stopped, so it does not outlive the run.
    with contextlib.suppress(psutil.NoSuchProcess):  # they may be exiting as we look
        for proc in postgres_processes(folder):
            proc.send_signal(signal.SIGCONT)
        found = read_postmaster(folder)
        if found and running(found.pid):
            psutil.Process(found.pid).send_signal(signal.SIGQUIT)
    wait_no_postgres(folder)
    shutil.rmtree(folder.parent, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_each_stop_signal_drains_serve_then_stops_its_database(data_dir, sig):
    serve = Serve(data_dir, "--demo")
    serve.wait_ready()
    postmaster = read_postmaster(data_dir)
    assert postmaster is not None and running(postmaster.pid)

    assert serve.stop(sig) == 0, serve.output

    out = serve.output
    assert f"{sig.name} received: stopping cleanly" in out
    # The API and the in-process worker drained first; the database went last.
    assert out.index("Application shutdown complete") < out.index(f"embedded PostgreSQL for {data_dir} stopped")
    assert out.index("escalation worker") < out.index(f"embedded PostgreSQL for {data_dir} stopped")
    assert not running(postmaster.pid)
    assert_no_postgres(data_dir)
    assert read_users(data_dir) == []


def test_a_second_signal_stops_at_once(data_dir):
    serve = Serve(data_dir)
    serve.wait_ready()
    # A request still uploading its body: a clean stop waits for it to finish.
    upload = socket.create_connection(("127.0.0.1", serve.port))
    upload.sendall(
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    time.sleep(0.5)
    serve.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        serve.proc.wait(3)  # still draining: the upload is not done

    started = time.monotonic()
    assert serve.stop(signal.SIGTERM, timeout=20) == 0, serve.output
    assert time.monotonic() - started < 10
    upload.close()
    assert "SIGTERM received again: stopping at once" in serve.output
    assert_no_postgres(data_dir)


def test_a_leftover_of_a_killed_serve_is_reused_and_stopped_by_the_next(data_dir):
    first = Serve(data_dir)
    first.wait_ready()
    postmaster = read_postmaster(data_dir)
    assert postmaster is not None
    first.proc.kill()  # kill -9: no clean-up at all
    first.wait()
    assert running(postmaster.pid), "the server outlives a killed serve"

    second = Serve(data_dir)
    second.wait_ready()
    assert (
        f"embedded PostgreSQL for {data_dir}: reusing the server left running (pid {postmaster.pid})" in second.output
    )
    # The killed process's registration does not keep the server alive: the last one out stops it.
    assert second.stop(signal.SIGTERM) == 0, second.output
    assert_no_postgres(data_dir)


def _chown_for_postgres(path: Path) -> str | None:
    """As root, PostgreSQL runs as pgserver's own user, which must be able to reach ``path``."""
    if os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_prefix_permissions

    ensure_prefix_permissions(path)
    return "pgserver"


def _start_server_from(install: Path, data_dir: Path) -> int:
    """Start a server on ``data_dir`` with the binaries of ``install`` (as pgserver itself starts one)."""
    user = _chown_for_postgres(install)
    subprocess.run(
        [
            str(install / "bin" / "pg_ctl"),
            "-D",
            str(data_dir),
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {data_dir}",
            "-l",
            str(data_dir / "log"),
            "start",
        ],
        check=True,
        user=user,
        capture_output=True,
        timeout=60,
    )
    found = read_postmaster(data_dir)
    assert found is not None
    return found.pid


def _initialise(data_dir: Path) -> None:
    start_embedded(data_dir)
    release(data_dir)
    assert_no_postgres(data_dir)


async def _connect_as_the_app(data_dir: Path) -> None:
    conn = await asyncpg.connect(
        host=str(data_dir), user="postgres", database="postgres", server_settings={"timezone": "UTC"}, timeout=10
    )
    await conn.close()


def test_a_leftover_from_a_deleted_installation_is_replaced(data_dir):
    _initialise(data_dir)
    copy = data_dir.parent / "old-install"
    shutil.copytree(embedded_pg.our_postgres().parents[1], copy, symlinks=True)
    old_pid = _start_server_from(copy, data_dir)
    shutil.rmtree(copy)  # the virtualenv rebuilt, the package upgraded, a throwaway install removed
    # What users met: every connection the app makes fails.
    with pytest.raises(asyncpg.PostgresError, match='invalid value for parameter "TimeZone"'):
        asyncio.run(_connect_as_the_app(data_dir))

    serve = Serve(data_dir)
    serve.wait_ready()
    out = serve.output
    line = next(ln for ln in out.splitlines() if f"embedded PostgreSQL for {data_dir}:" in ln)
    assert f"replaced the server left running (pid {old_pid}) because it runs {copy}/bin/postgres" in line
    assert "started a new server" in line
    assert not running(old_pid)
    asyncio.run(_connect_as_the_app(data_dir))
    assert serve.stop() == 0, serve.output
    assert_no_postgres(data_dir)


def test_a_healthy_server_from_another_installation_is_replaced_too(data_dir, caplog):
    _initialise(data_dir)
    copy = data_dir.parent / "other-install"
    shutil.copytree(embedded_pg.our_postgres().parents[1], copy, symlinks=True)
    old_pid = _start_server_from(copy, data_dir)
    asyncio.run(_connect_as_the_app(data_dir))  # it answers: only where it was started from tells

    caplog.set_level("INFO", logger="liushou.embedded_pg")
    start_embedded(data_dir)
    try:
        assert f"replaced the server left running (pid {old_pid}) because it runs {copy}/bin/postgres" in caplog.text
        new = read_postmaster(data_dir)
        assert new is not None and new.pid != old_pid
        assert embedded_pg.started_elsewhere(psutil.Process(new.pid)) is None
    finally:
        release(data_dir)
    assert_no_postgres(data_dir)


def test_a_stale_lock_naming_a_reused_pid_does_not_block_the_start(data_dir, caplog):
    _initialise(data_dir)
    pid = _start_server_from(embedded_pg.our_postgres().parents[1], data_dir)
    lock = (data_dir / "postmaster.pid").read_text()
    psutil.Process(pid).send_signal(signal.SIGQUIT)
    wait_no_postgres(data_dir)
    # A power cut leaves the lock file; after the reboot its pid belongs to some other program.
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        (data_dir / "postmaster.pid").write_text(lock.replace(str(pid), str(unrelated.pid), 1))
        caplog.set_level("INFO", logger="liushou.embedded_pg")
        start_embedded(data_dir)
        try:
            assert f"removed the stale lock of pid {unrelated.pid}" in caplog.text
            asyncio.run(_connect_as_the_app(data_dir))
        finally:
            release(data_dir)
        assert unrelated.poll() is None, "the unrelated program was left alone"
    finally:
        unrelated.kill()
        unrelated.wait()
    assert_no_postgres(data_dir)


def test_a_server_that_cannot_be_stopped_is_named_with_the_command_to_stop_it(data_dir):
    _initialise(data_dir)
    pid = _start_server_from(embedded_pg.our_postgres().parents[1], data_dir)
    os.kill(pid, signal.SIGSTOP)  # hung: neither answers nor stops
    try:
        with pytest.raises(EmbeddedPostgresError) as caught:
            start_embedded(data_dir, answer_timeout=1, stop_timeout=1)
    finally:
        os.kill(pid, signal.SIGCONT)
    message = str(caught.value)
    assert f"data folder {data_dir} is locked by a server (pid {pid}) that cannot be stopped" in message
    assert f"kill -QUIT {pid}" in message and f"stop -D {data_dir} -m immediate" in message
    wait_no_postgres(data_dir)  # once thawed, it acts on the stop it was sent


def test_serve_reports_a_server_that_cannot_be_stopped_and_exits(data_dir):
    _initialise(data_dir)
    pid = _start_server_from(embedded_pg.our_postgres().parents[1], data_dir)
    os.kill(pid, signal.SIGSTOP)
    try:
        serve = Serve(data_dir)
        assert serve.wait(timeout=BOOT_TIMEOUT) == 2, serve.output
    finally:
        os.kill(pid, signal.SIGCONT)
    assert f"error: the embedded PostgreSQL data folder {data_dir} is locked" in serve.output
    assert "Traceback" not in serve.output


def test_two_serves_on_one_folder_share_the_server_and_the_last_one_stops_it(data_dir):
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    first, second = Serve(data_dir), Serve(data_dir)  # at the same instant, on a folder that does not exist yet
    first.wait_ready()
    second.wait_ready()
    lines = [
        ln for s in (first, second) for ln in s.output.splitlines() if f"embedded PostgreSQL for {data_dir}:" in ln
    ]
    assert len(lines) == 2 and sum("started a new server" in ln for ln in lines) == 1
    assert sum("sharing the running server" in ln for ln in lines) == 1
    postmaster = read_postmaster(data_dir)
    assert postmaster is not None
    assert len(read_users(data_dir)) == 2

    assert first.stop() == 0, first.output
    assert "left running for 1 other liushou process(es)" in first.output
    assert running(postmaster.pid)
    ready = second.readyz()
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"

    assert second.stop() == 0, second.output
    assert f"embedded PostgreSQL for {data_dir} stopped (pid {postmaster.pid})" in second.output
    assert_no_postgres(data_dir)


def test_the_test_harness_stops_its_server_when_the_run_is_killed(request):
    # A temporary folder of its own (short: the server's Unix socket path must stay under ~100 bytes).
    private_tmp = Path(tempfile.mkdtemp(prefix="lsh-"))
    request.addfinalizer(lambda: shutil.rmtree(private_tmp, ignore_errors=True))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["TMPDIR"] = str(private_tmp)
    with (private_tmp / "pytest.log").open("wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cli.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        folders: list[Path] = []
        while time.monotonic() < deadline and run.poll() is None:
            # A server, not initdb's single-user runs (they write a postmaster.pid too, never "ready").
            ready = [f for f in private_tmp.rglob("postmaster.pid") if f.read_text().rstrip().endswith("ready")]
            folders = [pid_file.parent for pid_file in ready]
            if folders:
                break
            time.sleep(0.1)
        assert folders, (private_tmp / "pytest.log").read_text()
        time.sleep(1)  # into the run
        run.send_signal(signal.SIGTERM)
        run.wait(60)
    finally:
        if run.poll() is None:
            run.kill()
    left = []
    for folder in folders:
        wait_no_postgres(folder, timeout=5)
        left += postgres_processes(folder)
        found = read_postmaster(folder)
        if found and running(found.pid):
            os.kill(found.pid, signal.SIGQUIT)  # do not outlive this run either
    assert left == [], (private_tmp / "pytest.log").read_text()


def test_the_worker_stops_its_database_too(data_dir):
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "worker"], cwd=ROOT, env=_env(data_dir), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while "escalation worker" not in log.read_text() and time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            time.sleep(0.2)
        postmaster = read_postmaster(data_dir)
        assert postmaster is not None
        worker.send_signal(signal.SIGHUP)
        assert worker.wait(60) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    out = log.read_text()
    drained = re.search(r"escalation worker \S+ stopped", out)
    assert drained is not None and drained.start() < out.index(f"embedded PostgreSQL for {data_dir} stopped")
    assert not running(postmaster.pid)
    assert_no_postgres(data_dir)


def test_ctrl_c_on_dev_py_serve_stops_the_database(data_dir):
    """A Ctrl+C in the terminal reaches dev.py and serve together; dev.py used to kill serve 0.25 s later."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = data_dir.parent / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "dev.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=_env(data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job is
        )
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            assert dev.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        os.killpg(dev.pid, signal.SIGINT)  # what the terminal does on Ctrl+C
        assert dev.wait(60) == 0, log.read_text()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
    assert f"embedded PostgreSQL for {data_dir} stopped" in log.read_text()
    assert_no_postgres(data_dir)
