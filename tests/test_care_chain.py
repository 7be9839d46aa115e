"""The hash chain, pure: canonical hashing is stable, and verification names the first link that does not
hold — an edited link, a missing one, a reordered one, a head that names another link."""

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from api.services.care import chain

IDS = [uuid.UUID(int=i) for i in range(1, 20)]


def test_canonical_form_ignores_key_order_and_the_zone_an_instant_is_written_in():
    at = datetime(2026, 11, 24, 2, 0, 0, 123456, tzinfo=UTC)
    beijing = at.astimezone(timezone(timedelta(hours=8)))
    assert chain.canonical({"b": 1, "a": at}) == chain.canonical({"a": beijing, "b": 1})
    assert chain.canonical({"a": "谈心"}) == '{"a":"谈心"}'.encode()


def test_the_state_hash_changes_with_content_and_date():
    base = chain.state_hash(date(2026, 11, 24), {"mood": "low"})
    assert base == chain.state_hash(date(2026, 11, 24), {"mood": "low"})
    assert base != chain.state_hash(date(2026, 11, 23), {"mood": "low"})
    assert base != chain.state_hash(date(2026, 11, 24), {"mood": "fair"})


def build(n: int) -> list[chain.Link]:
    links, prev = [], chain.GENESIS
    for seq in range(1, n + 1):
        content = chain.sha256(f"content {seq}".encode())
        row = chain.link_hash(seq, prev, content)
        links.append(chain.Link(seq, chain.RECORD, IDS[seq], prev, content, row, content))
        prev = row
    return links


def head_of(links: list[chain.Link]) -> chain.Head:
    return chain.Head(links[-1].seq, links[-1].row_hash) if links else chain.Head(0, chain.GENESIS)


def test_an_intact_chain_and_an_empty_one_hold():
    links = build(5)
    assert chain.first_break(links, head_of(links)) is None
    assert chain.first_break([], None) is None
    assert chain.first_break([], chain.Head(0, chain.GENESIS)) is None


def edit_content(links):
    links[2] = replace(links[2], recomputed=chain.sha256(b"edited"))
    return links, head_of(links), 3, "content_changed"


def edit_content_and_its_hash(links):
    forged = chain.sha256(b"edited")
    links[2] = replace(links[2], recomputed=forged, content_hash=forged)
    return links, head_of(links), 3, "row_hash_changed"


def rehash_the_edited_link(links):
    forged = chain.sha256(b"edited")
    links[2] = replace(
        links[2], recomputed=forged, content_hash=forged, row_hash=chain.link_hash(3, links[2].prev_hash, forged)
    )
    return links, head_of(links), 4, "link_changed"


def delete_a_middle_link(links):
    head = head_of(links)
    del links[2]
    return links, head, 4, "missing_link"


def delete_the_first_link(links):
    head = head_of(links)
    del links[0]
    return links, head, 2, "missing_link"


def delete_the_newest_link(links):
    head = head_of(links)
    del links[-1]
    return links, head, None, "head_mismatch"


def delete_every_link(links):
    return [], head_of(links), None, "head_mismatch"


def swap_two_links(links):
    links[1], links[2] = replace(links[2], seq=2), replace(links[1], seq=3)
    return links, head_of(links), 2, "link_changed"


def duplicate_a_link(links):
    links.insert(3, links[2])
    return links, head_of(links), 3, "duplicate_link"


def a_record_whose_versions_do_not_follow(links):
    links[1] = replace(links[1], problem="versions_inconsistent")
    return links, head_of(links), 2, "versions_inconsistent"


def a_head_moved_back(links):
    return links, chain.Head(4, links[3].row_hash), None, "head_mismatch"


TAMPERING = [
    edit_content,
    edit_content_and_its_hash,
    rehash_the_edited_link,
    delete_a_middle_link,
    delete_the_first_link,
    delete_the_newest_link,
    delete_every_link,
    swap_two_links,
    duplicate_a_link,
    a_record_whose_versions_do_not_follow,
    a_head_moved_back,
]


@pytest.mark.parametrize("tamper", TAMPERING, ids=[t.__name__ for t in TAMPERING])
def test_tampering_is_caught_at_the_first_broken_link(tamper):
    links, head, seq, problem = tamper(build(5))
    broken = chain.first_break(links, head)
    assert broken is not None
    assert (broken.seq, broken.problem) == (seq, problem)
    assert broken.message
