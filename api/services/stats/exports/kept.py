"""Finished exports, kept on disk by what they were written from, so that a second download of the same file
is not written again.

An export is a pure function of its tables and trend (the very answers of ``GET /stats/table`` and
``GET /stats/trend``, suppression included) and, for a CSV, the names of the rows' parents. Its key is a digest
of those inputs — every figure, every hidden cell, every unit name, the period, the threshold — with the kind
of file, the writer's version and the caller's scope root (the bureau's county, a township official's township,
a school admin's school; the platform's own) beside it: any change in the rows that changes a figure or a
name gives a new key and a new file; a caller of another scope never reaches this one's. The tables' ``as_of``
is left out (it moves with every request while the figures stand still): a file served again says the as-of
of its first writing, which its figures still are.

Each file is written to a temporary name and renamed into place (a reader never sees half a file); the
oldest beyond :data:`MAX_FILES` are removed. A file that cannot be read or written is simply written again.
"""

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from api.models.stats import StatsTable, StatsTrend
from api.scoping import Principal

WRITER_VERSION = "1"  # bump when a writer's output changes for the same inputs
MAX_FILES = 256


def default_dir() -> Path:
    return Path(tempfile.gettempdir()) / "liushou-stats-exports"


def scope_of(principal: Principal) -> str:
    """The caller's scope root, as the key names it."""
    role = principal.role.value if principal.role is not None else "-"
    return f"{role}:{principal.county_id}:{principal.township_id}:{principal.school_id}"


def export_key(
    kind: str,
    principal: Principal,
    tables: Sequence[StatsTable],
    trend: StatsTrend | None,
    *,
    extra: str = "",
) -> str:
    digest = hashlib.sha256()
    for part in (WRITER_VERSION, kind, scope_of(principal), extra):
        digest.update(part.encode())
        digest.update(b"\0")
    for table in tables:
        digest.update(table.model_dump_json(exclude={"as_of"}).encode())
        digest.update(b"\0")
    if trend is not None:
        digest.update(trend.model_dump_json(exclude={"as_of"}).encode())
    return f"{kind}-{digest.hexdigest()}"


class ExportStore:
    def __init__(self, directory: Path, *, max_files: int = MAX_FILES) -> None:
        self.directory = directory
        self.max_files = max_files

    def _path(self, key: str) -> Path:
        return self.directory / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, content: bytes) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".part-")
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            os.replace(tmp, self._path(key))
            self._prune()
        except OSError:
            return  # not kept: the next download writes it again

    def _prune(self) -> None:
        files = [p for p in self.directory.iterdir() if not p.name.startswith(".")]
        if len(files) <= self.max_files:
            return
        files.sort(key=lambda p: p.stat().st_mtime)
        for old in files[: len(files) - self.max_files]:
            old.unlink(missing_ok=True)


_STORES: dict[str, ExportStore] = {}


def store_at(directory: str | None) -> ExportStore:
    """The store of a directory (the setting ``stats_export_dir``; unset: the system's temporary folder)."""
    path = Path(directory) if directory else default_dir()
    found = _STORES.get(str(path))
    if found is None:
        found = _STORES[str(path)] = ExportStore(path)
    return found


def versioned_key(kind: str, principal: Principal, version: str, *, extra: str = "") -> str:
    """The key of an export whose tables are all computed from kept rows: their versions (the rows' versions,
    the units and their names, the scope root, the threshold, the periods — :func:`.service.answer_version`)
    stand for the tables, so a second download need not build them to know its file is kept."""
    digest = hashlib.sha256()
    for part in (WRITER_VERSION, kind, scope_of(principal), extra, version):
        digest.update(part.encode())
        digest.update(b"\0")
    return f"{kind}-v-{digest.hexdigest()}"
