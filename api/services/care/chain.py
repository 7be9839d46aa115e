"""The hash chain of a school's care records: canonical hashing of each link and verification. Pure.

Each link is one row — a record as first written, a correction (the superseded version), an amendment — and
holds ``content_hash`` (the hash of its canonical content) and ``prev_hash`` (the previous link's
``row_hash``); ``row_hash`` binds the two with the link's position. The head of the chain (last position and
hash) is kept in a table of its own, so removing the newest link is noticed as surely as editing an old one.

A record's current content moves when its author corrects it; it is covered all the same: the record's link
hashes its first state, each correction link hashes the state it supersedes and the state that replaced it,
so the current state is the one the last link names.
"""

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from api.models.care import ChainBreak

GENESIS = "0" * 64

RECORD = "care_record"
VERSION = "care_record_version"
AMENDMENT = "care_record_amendment"


def _json_value(value: Any) -> Any:
    """What JSON cannot say by itself: ids, instants (in UTC, to the microsecond) and dates."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no canonical form")


def canonical(payload: dict[str, Any]) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8, times in UTC to the microsecond. (The C
    encoder walks the payload; only ids and times come back to Python.)"""
    return json.dumps(payload, default=_json_value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_hash(occurred_on: date, content: dict[str, Any]) -> str:
    """The hash of a record's state: what happened (its content) and when."""
    return sha256(canonical({"occurred_on": occurred_on, "content": content}))


def record_content_hash(
    *,
    record_id: uuid.UUID,
    school_id: uuid.UUID,
    child_id: uuid.UUID,
    kind: str,
    author_id: uuid.UUID,
    created_at: datetime,
    first_state_hash: str,
) -> str:
    return sha256(
        canonical(
            {
                "t": RECORD,
                "id": record_id,
                "school_id": school_id,
                "child_id": child_id,
                "kind": kind,
                "author_id": author_id,
                "created_at": created_at,
                "state": first_state_hash,
            }
        )
    )


def version_content_hash(
    *,
    version_id: uuid.UUID,
    record_id: uuid.UUID,
    school_id: uuid.UUID,
    version: int,
    superseded_state_hash: str,
    replaced_by_hash: str,
    corrected_by_id: uuid.UUID,
    corrected_at: datetime,
) -> str:
    return sha256(
        canonical(
            {
                "t": VERSION,
                "id": version_id,
                "record_id": record_id,
                "school_id": school_id,
                "version": version,
                "state": superseded_state_hash,
                "replaced_by": replaced_by_hash,
                "corrected_by_id": corrected_by_id,
                "corrected_at": corrected_at,
            }
        )
    )


def amendment_content_hash(
    *,
    amendment_id: uuid.UUID,
    record_id: uuid.UUID,
    school_id: uuid.UUID,
    reason: str,
    text: str,
    author_id: uuid.UUID,
    created_at: datetime,
) -> str:
    return sha256(
        canonical(
            {
                "t": AMENDMENT,
                "id": amendment_id,
                "record_id": record_id,
                "school_id": school_id,
                "reason": reason,
                "text": text,
                "author_id": author_id,
                "created_at": created_at,
            }
        )
    )


def link_hash(seq: int, prev_hash: str, content_hash: str) -> str:
    return sha256(f"{seq}:{prev_hash}:{content_hash}".encode())


@dataclass(frozen=True)
class Link:
    """A stored link, with the content hash recomputed from its stored fields (``None``: the row's fields do
    not agree with each other — e.g. a record whose versions are not numbered one after another)."""

    seq: int
    table: str
    row_id: uuid.UUID
    prev_hash: str
    content_hash: str
    row_hash: str
    recomputed: str | None
    problem: str | None = None


@dataclass(frozen=True)
class Head:
    seq: int
    head_hash: str


_MESSAGES = {
    "missing_link": "链中缺少第 {expected} 条 (a link is missing: the chain jumps from {prev} to {seq})",
    "duplicate_link": "第 {seq} 条出现多次 (link {seq} appears more than once)",
    "link_changed": "第 {seq} 条的前序哈希不符 (link {seq} does not follow the link before it)",
    "content_changed": "第 {seq} 条的内容已被改动 (the content of link {seq} was changed)",
    "row_hash_changed": "第 {seq} 条的哈希已被改动 (the hash of link {seq} was changed)",
    "versions_inconsistent": "第 {seq} 条所属记录的版本不连续 (the versions of link {seq}'s record do not follow)",
    "replacement_changed": "第 {seq} 条更正后的内容已被改动 (the content that replaced it was changed)",
    "head_mismatch": "链头与最后一条不符: 链头为第 {head} 条, 链止于第 {last} 条 (the head names another link)",
}


def _break(problem: str, link: Link | None, **values: Any) -> ChainBreak:
    seq = link.seq if link else None
    return ChainBreak(
        seq=seq,
        table=link.table if link else None,
        row_id=link.row_id if link else None,
        problem=problem,
        message=_MESSAGES[problem].format(seq=seq, **values),
    )


def first_break(links: Iterable[Link], head: Head | None) -> ChainBreak | None:
    """The first link (in chain order) that does not hold, or the head if it does not name the last link;
    ``None`` when the whole chain holds. ``links`` must come sorted by position."""
    prev_hash, prev_seq = GENESIS, 0
    for link in links:
        if link.seq == prev_seq:
            return _break("duplicate_link", link)
        if link.seq != prev_seq + 1:
            return _break("missing_link", link, expected=prev_seq + 1, prev=prev_seq)
        if link.prev_hash != prev_hash:
            return _break("link_changed", link)
        if link.problem is not None:
            return _break(link.problem, link)
        if link.recomputed != link.content_hash:
            return _break("content_changed", link)
        if link_hash(link.seq, link.prev_hash, link.content_hash) != link.row_hash:
            return _break("row_hash_changed", link)
        prev_hash, prev_seq = link.row_hash, link.seq
    head_seq, head_hash = (head.seq, head.head_hash) if head else (0, GENESIS)
    if head_seq != prev_seq or head_hash != prev_hash:
        return _break("head_mismatch", None, head=head_seq, last=prev_seq)
    return None
