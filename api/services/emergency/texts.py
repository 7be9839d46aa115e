"""What the chain says, on which channel, and how the person answers it.

SMS and voice may name the child to the family (they are the family); WeChat template data never carries a
child's name, only the case code (DOMAIN.md). Every notification carries a way to acknowledge: a reply code
("回复 1234 确认收到") and a link on SMS, the link in the mini-program page on WeChat, "press 1" on a call.
The link's token is made and read by :mod:`api.ack_links`.
"""

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from api.channels.voice import ACK_DIGIT
from api.clock import SHANGHAI
from api.models.escalation import (
    AUDIENCE_LABELS,
    STEP_LABELS,
    Audience,
)
from api.models.notifications import Channel

# Reply codes: 4 digits; a number with so many open parties that 4-digit draws keep colliding gets longer ones.
REPLY_CODE_DIGITS = 4
REPLY_CODE_MAX_DIGITS = 8
_REPLY_CODE = re.compile(r"(?<!\d)\d{4,8}(?!\d)")
# WeChat subscribe-message template fields (configure the template with these keys): 事件编号, 事件类型,
# 发生时间, 学校, 温馨提示. "thing" values are limited to 20 characters by WeChat.
WECHAT_CASE_KEY = "character_string1"
WECHAT_KIND_KEY = "thing2"
WECHAT_TIME_KEY = "time3"
WECHAT_PLACE_KEY = "thing4"
WECHAT_HINT_KEY = "thing5"
WECHAT_ACK_PAGE = "pages/incident/ack"


def new_reply_code(digits: int = REPLY_CODE_DIGITS) -> str:
    """A code a guardian can type back by SMS: ``digits`` digits, no leading zero."""
    low = 10 ** (digits - 1)
    return f"{secrets.randbelow(9 * low) + low}"


def find_reply_codes(text: str) -> set[str]:
    """The candidate codes in a reply: runs of 4 to 8 digits (a phone number or a date is longer or shorter)."""
    return set(_REPLY_CODE.findall(text))


def local_time(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class CaseFacts:
    """What a notification may say about an incident."""

    incident_id: uuid.UUID
    case_code: str
    school_name: str
    school_phone: str | None
    child_name: str
    category_label: str
    severity_label: str
    occurred_at: datetime


@dataclass(frozen=True)
class Rendered:
    body: str
    template_data: dict[str, str] | None = None
    wechat_page: str | None = None


def reply_phrase(code: str) -> str:
    """How an SMS asks for its reply code: the one place its text names the code (:func:`with_reply_code`)."""
    return f"回复{code}确认收到"


def with_reply_code(body: str, quoted: str, code: str) -> str:
    """An SMS ``body`` that asks for the reply code ``quoted``, asking for ``code`` instead."""
    return body.replace(reply_phrase(quoted), reply_phrase(code), 1)


def notification(
    facts: CaseFacts, *, audience: Audience, channel: Channel, link: str, reply_code: str, token: str
) -> Rendered:
    """The text (or WeChat data) telling one party about the incident."""
    family = audience in (Audience.entrusted_guardian, Audience.parents_away)
    when = local_time(facts.occurred_at)
    call_school = f"，学校电话{facts.school_phone}" if facts.school_phone else ""
    if channel == Channel.wechat:
        hint = "请点击确认收到并尽快联系学校" if family else "请点击确认收到并查看详情"
        return Rendered(
            body=f"微信订阅消息 事件{facts.case_code}",
            template_data={
                WECHAT_CASE_KEY: facts.case_code,
                WECHAT_KIND_KEY: _clip(f"学生{facts.category_label}（{facts.severity_label}）", 20),
                WECHAT_TIME_KEY: when,
                WECHAT_PLACE_KEY: _clip(facts.school_name, 20),
                WECHAT_HINT_KEY: hint,
            },
            wechat_page=f"{WECHAT_ACK_PAGE}?id={facts.incident_id}&token={token}",
        )
    if channel == Channel.voice:
        if family:
            body = (
                f"您好，这里是{facts.school_name}。{facts.child_name}在学校发生{facts.category_label}，"
                f"学校正在处置，请尽快与学校联系{call_school}。听清楚请按{ACK_DIGIT}确认。"
            )
        else:
            body = (
                f"您好，这里是留守儿童应急通知。{facts.school_name}报告一起学生{facts.category_label}事件，"
                f"程度{facts.severity_label}，请登录系统查看。听清楚请按{ACK_DIGIT}确认。"
            )
        return Rendered(body=_clip(body, 500))
    if family:
        body = (
            f"【{facts.school_name}】{facts.child_name}于{when}在校发生{facts.category_label}"
            f"（{facts.severity_label}），学校正在处置，请尽快与学校联系{call_school}。"
            f"{reply_phrase(reply_code)}，或点击 {link} 事件编号{facts.case_code}"
        )
    else:
        body = (
            f"【留守儿童应急】{facts.school_name}报告：学生于{when}在校发生{facts.category_label}"
            f"（{facts.severity_label}），事件编号{facts.case_code}{call_school}。"
            f"{reply_phrase(reply_code)}，或点击 {link}"
        )
    return Rendered(body=_clip(body, 500))


LEADER_REASONS = {
    "near_deadline": "即将超时",
    "breach": "已超时未告知",
    "unreachable": "无可联系的人或号码",
    "exhausted": "多轮联系均未确认",
}


def leader_alert(
    facts: CaseFacts, *, channel: Channel, reason: str, step_no: int, audience: Audience | None, deadline_at: datetime
) -> Rendered:
    """An alert to the school's leaders; names no child (the case code is enough for staff)."""
    who = f"告知{AUDIENCE_LABELS[audience]}" if audience else STEP_LABELS[step_no]
    what = LEADER_REASONS[reason]
    deadline = deadline_at.astimezone(SHANGHAI).strftime("%H:%M")
    if channel == Channel.wechat:
        return Rendered(
            body=f"微信订阅消息 事件{facts.case_code} 校领导提醒",
            template_data={
                WECHAT_CASE_KEY: facts.case_code,
                WECHAT_KIND_KEY: _clip(f"第{step_no}步{what}", 20),
                WECHAT_TIME_KEY: local_time(deadline_at),
                WECHAT_PLACE_KEY: _clip(who, 20),
                WECHAT_HINT_KEY: "请立即电话联系并在系统登记",
            },
            wechat_page=f"pages/incident/detail?id={facts.incident_id}",
        )
    body = (
        f"【留守儿童应急】事件{facts.case_code}第{step_no}步（{who}）{what}，时限{deadline}。"
        "请立即电话联系并在系统中登记。"
    )
    return Rendered(body=body)


_REPLY_HELP_OPENING = {
    "ambiguous": "您的回复含有多个确认码，无法确定您确认的是哪一条通知，尚未确认。",
    "no_longer_open": "您回复的确认码对应的通知已确认或事件已结案，无需再回复。",
    "unknown_code": "未能识别您回复的确认码，尚未确认。",
    "no_code": "您的回复中没有确认码，尚未确认。",
}
# Open cases named in one answer; a number with more is a duty phone whose staff use the system.
_REPLY_HELP_CASES = 5


def reply_help(reason: str, open_codes: list[tuple[str, str]]) -> str:
    """The SMS answering a reply that acknowledged nothing: why, and the code of each case still open on the
    number (case codes only: the number may have changed hands, so no child is named)."""
    parts = [f"【留守儿童应急】{_REPLY_HELP_OPENING[reason]}"]
    if open_codes:
        cases = "；".join(f"事件{case}请回复{code}" for case, code in open_codes[:_REPLY_HELP_CASES])
        more = f"等{len(open_codes)}条" if len(open_codes) > _REPLY_HELP_CASES else ""
        parts.append(f"待确认{more}：{cases}。每条短信只回复一个确认码。")
    parts.append("如有疑问请直接联系学校。")
    return _clip("".join(parts), 500)
