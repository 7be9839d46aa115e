"""The outbox's pure rules, table by table: what a send's answer makes of a message, the backoff, which
receipts still count, and what WeChat may carry."""

from datetime import UTC, datetime, timedelta

import pytest

from api.models.notifications import Channel, MessageStatus
from api.services.notifications import delivery
from api.services.notifications.outbox import PrivateDataError, Route, check_wechat

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("backoff_seconds", "attempts", "retry_after", "expected"),
    [
        (15, 1, None, 15),
        (15, 2, None, 30),
        (15, 3, None, 60),
        (15, 1, 40.0, 40),  # the provider's Retry-After when longer
        (15, 3, 1.0, 60),  # never shorter than our own
        (15, 10, None, 300),  # at most five minutes
        (15, 0, None, 15),
    ],
)
def test_backoff(backoff_seconds, attempts, retry_after, expected):
    assert delivery.backoff(backoff_seconds, attempts, retry_after) == timedelta(seconds=expected)


@pytest.mark.parametrize(
    ("channel", "prev_status", "attempts", "max_attempts", "expected"),
    [
        (Channel.sms, "pending", 1, 5, None),
        (Channel.sms, "sending", 2, 5, None),  # re-sent with the same key: the provider dedupes
        (Channel.wechat, "pending", 1, 5, None),
        (Channel.wechat, "sending", 2, 5, ("unconfirmed", "lease_expired")),  # may have been shown
        (Channel.voice, "pending", 6, 5, ("failed", "max_attempts")),
    ],
)
def test_before_send(channel, prev_status, attempts, max_attempts, expected):
    out = delivery.before_send(channel=channel, prev_status=prev_status, attempts=attempts, max_attempts=max_attempts)
    assert (out.kind, out.code) == expected if expected else out is None


@pytest.mark.parametrize(
    ("channel", "code", "attempts", "kind"),
    [
        (Channel.sms, "unavailable", 1, "retry"),
        (Channel.sms, "rate_limited", 5, "failed"),  # the attempts are used up
        (Channel.voice, "deadline", 2, "retry"),
        (Channel.wechat, "unavailable", 1, "unconfirmed"),  # no idempotency key: never resent
        (Channel.wechat, "deadline", 1, "unconfirmed"),
        (Channel.wechat, "unexpected", 1, "unconfirmed"),
        (Channel.wechat, "rate_limited", 1, "retry"),  # refused before it was shown
    ],
)
def test_after_a_temporary_error(channel, code, attempts, kind):
    out = delivery.after_temporary_error(
        channel=channel,
        code=code,
        text="",
        retry_after=None,
        attempts=attempts,
        max_attempts=5,
        retry_backoff_seconds=15,
        now=NOW,
    )
    assert out.kind == kind
    assert (out.retry_at is not None) == (kind == "retry")


@pytest.mark.parametrize(
    ("code", "dead"), [("invalid_number", True), ("blocked", True), ("43101", True), ("40003", True), ("x", False)]
)
def test_a_permanent_error_fails_and_says_whether_the_address_is_dead(code, dead):
    out = delivery.after_permanent_error(code, "")
    assert (out.kind, out.failure, out.dead_address) == ("failed", "permanent", dead)


@pytest.mark.parametrize(
    ("status", "deliver", "fail", "sent_by_receipt"),
    [
        (MessageStatus.pending, False, True, False),
        (MessageStatus.sending, True, True, True),
        (MessageStatus.sent, True, True, False),
        (MessageStatus.delivered, False, True, False),
        (MessageStatus.unconfirmed, False, True, False),
        (MessageStatus.failed, False, False, False),
        (MessageStatus.cancelled, False, False, False),
    ],
)
def test_which_receipts_still_count(status, deliver, fail, sent_by_receipt):
    assert delivery.may_deliver(status) is deliver
    assert delivery.may_fail(status) is fail
    assert delivery.sent_by_receipt(status, None) is sent_by_receipt
    assert delivery.sent_by_receipt(status, NOW) is False  # its send is recorded already


def test_the_acknowledgement_wait_is_anchored_once():
    first = delivery.ack_wait_until(None, first_known=NOW, ack_wait_seconds=300)
    assert first == NOW + timedelta(minutes=5)
    assert delivery.ack_wait_until(first, first_known=NOW + timedelta(minutes=3), ack_wait_seconds=300) == first


@pytest.mark.parametrize(
    ("data", "page", "ok"),
    [
        ({"thing1": "亲情通话提醒", "time2": "2026-12-01 20:00"}, "pages/call?id=1", True),
        ({"thing1": "刘小明亲情通话"}, None, False),  # the child's name
        ({"thing1": "亲情通话"}, "pages/call?who=刘小明", False),  # in the page it opens
        ({"thing1": "一二三四五六七八九十一二三四五六七八九十一"}, None, False),  # longer than WeChat allows
        ({"name": "亲情通话"}, None, False),  # not a template field
        (None, None, False),  # a WeChat message is its fields
    ],
)
def test_what_wechat_may_carry(data, page, ok):
    route = Route(Channel.wechat, "o-father", "微信订阅消息", data, wechat_page=page)
    if ok:
        check_wechat(route, ["刘小明"])
    else:
        with pytest.raises(PrivateDataError):
            check_wechat(route, ["刘小明"])


def test_sms_and_calls_are_not_wechat_checked():
    check_wechat(Route(Channel.sms, "+8613800138000", "刘小明的亲情通话今晚8点"), ["刘小明"])
