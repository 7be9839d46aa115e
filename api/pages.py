"""The few HTML pages that people, not programs, read: the acknowledgement link's page and the front page.

The acknowledgement page is opened from an emergency SMS, often by a grandparent on a cheap Android phone or in
WeChat's in-app browser, sometimes with JavaScript off. So: no script at all, a plain form POST to a relative
address (it works under any path prefix of ``public_base_url``), one stylesheet inline with only CSS that old
WebViews know (blocks and borders — no flex gaps, grid, variables or ``clamp``), large text, one full-width
high-contrast button, a ``tel:`` button to the school's duty phone, nothing fetched from anywhere. Words are
chosen for the reader: a grandparent or a parent working away (never the official word 委托监护人), or an
official. It never names the child: the link may be forwarded, and the number may have changed hands.
"""

import html
from dataclasses import dataclass
from datetime import datetime

from api.clock import SHANGHAI
from api.models.escalation import AckPage, Audience
from api.phones import PhoneError, normalize_phone

# No script, no frames, nothing from elsewhere; the form may post only back to us.
ACK_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'self'; base-uri 'none'"

_STYLE = """
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;padding:16px 16px 32px;background:#fff;color:#111;font-family:sans-serif;font-size:22px;line-height:1.5}
h1{margin:0 0 12px;font-size:30px;line-height:1.3}
p{margin:0 0 14px}
.lead{font-size:24px}
.facts{margin:0 0 8px;padding:12px 14px;border:2px solid #444;border-radius:8px;background:#f4f4f4}
.facts div{margin:0 0 4px}
.facts span.k{color:#333}
.facts span.v{font-weight:bold}
.small{font-size:18px;font-weight:normal}
.code{white-space:nowrap;word-break:keep-all;letter-spacing:1px}
.sev{display:inline-block;padding:0 10px;border-radius:6px;color:#fff;background:#333}
.sev-severe,.sev-critical{background:#b00020}
.sev-moderate{background:#a14000}
.btn{display:block;width:100%;-webkit-box-sizing:border-box;box-sizing:border-box;margin:18px 0;padding:18px 10px;
border-radius:10px;font-family:sans-serif;font-size:28px;font-weight:bold;line-height:1.3;text-align:center;
text-decoration:none;-webkit-appearance:none;appearance:none;cursor:pointer}
.confirm{border:3px solid #063d12;background:#0a6b22;color:#fff}
.call{border:3px solid #0b3d91;background:#fff;color:#0b3d91}
.call span{display:block;font-size:24px;white-space:nowrap}
.next{padding:12px 14px;border-left:6px solid #0a6b22;background:#eef7ee}
.note{font-size:18px;color:#333}
"""

SEVERITY_CLASSES = {"minor", "moderate", "severe", "critical"}


@dataclass(frozen=True)
class Words:
    """What the page says to one audience."""

    title: str
    lead: str  # what happened, in a sentence ({school}, {category})
    ask: str  # what we ask them to do
    button: str
    next: str  # after confirming: what happens now


_FAMILY_NEXT = (
    "学校老师正在处理，有新情况会打电话告诉您。这件事不会再打电话或发短信让您确认了。想问孩子的情况，请直接打学校电话。"
)
WORDS = {
    Audience.entrusted_guardian: Words(
        title="学校紧急通知",
        lead="您家孩子在{school}出了事（{category}），学校正在处理。",
        ask="请按下面的绿色大按钮，告诉学校您已经知道了。",
        button="我知道了，确认收到",
        next=_FAMILY_NEXT,
    ),
    Audience.parents_away: Words(
        title="学校紧急通知",
        lead="您的孩子在{school}发生{category}，学校正在处理，也在联系家里照看孩子的亲人。",
        ask="请按下面的绿色按钮告诉学校您已收到，并尽快给学校打个电话。",
        button="我知道了，确认收到",
        next=_FAMILY_NEXT,
    ),
    Audience.county_bureau: Words(
        title="学生安全事件报告",
        lead="{school}报告一起学生{category}事件，学校正在处置。",
        ask="请确认已收到本报告。处置进展请登录留守儿童关爱平台查看。",
        button="确认收到",
        next="已记录您确认收到的时间，本报告不会再向您发送确认提醒。学校继续处置并通知家长，进展请登录平台查看。",
    ),
}
WORDS[Audience.township] = WORDS[Audience.county_bureau]


def tel_href(phone: str) -> str | None:
    """``tel:`` address of a number as stored (``0739-5220000-123`` → ``tel:07395220000,123``)."""
    try:
        parsed = normalize_phone(phone)
    except PhoneError:
        return None
    if parsed.area_code is None:
        return f"tel:{parsed.normalized}"
    area, local = parsed.normalized.split("-")[:2]
    return f"tel:{area}{local}" + (f",{parsed.extension}" if parsed.extension else "")


def local_time(moment: datetime) -> str:
    local = moment.astimezone(SHANGHAI)
    return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        # Our own tel: button is the one to press; digits in the case code must not turn into phone links.
        "<meta name='format-detection' content='telephone=no'>"
        "<meta name='robots' content='noindex'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def call_button(phone: str | None, *, label: str = "打电话给学校") -> str:
    if not phone:
        return ""
    href = tel_href(phone)
    if href is None:
        return f"<p>学校电话：<b class='code'>{_e(phone)}</b></p>"
    return f"<a class='btn call' href='{_e(href)}'>{_e(label)}<span>{_e(phone)}</span></a>"


def _facts(page: AckPage) -> str:
    severity = page.severity if page.severity in SEVERITY_CLASSES else "minor"
    rows = [
        ("发生了什么", _e(page.category_label)),
        ("严重程度", f"<span class='sev sev-{severity}'>{_e(page.severity_label)}</span>"),
        ("学校", _e(page.school_name)),
        (page.time_label, f"{_e(local_time(page.occurred_at))} <span class='small'>北京时间</span>"),
        ("事件编号", f"<span class='code' id='case-code'>{_e(page.case_code)}</span>"),
    ]
    inner = "".join(f"<div><span class='k'>{_e(k)}：</span><span class='v'>{v}</span></div>" for k, v in rows)
    return f"<div class='facts'>{inner}</div>"


def _no_name() -> str:
    return "<p class='note'>为保护孩子，本页不写孩子的姓名。详细情况请打电话问学校。</p>"


def ack_page(page: AckPage, *, action: str) -> str:
    """The page behind an acknowledgement link: the notice and its button, the thanks after it, or the note
    that the incident is closed. ``action`` is where the form posts (relative, see the module docstring)."""
    words = WORDS[page.audience]
    school = page.school_name
    if page.closed:
        body = (
            "<h1>此事已处理完毕</h1>"
            f"<p class='lead'>{_e(school)}已经处理完这件事（已结案）。这个链接不用再确认了，您不需要再做什么。</p>"
            + _facts(page)
            + ("<p>有疑问请打学校电话：</p>" if page.school_phone else "<p>有疑问请直接与学校联系。</p>")
            + call_button(page.school_phone)
        )
        return document("此事已处理完毕", body)
    if page.acknowledged:
        when = f"（{local_time(page.acknowledged_at)}）" if page.acknowledged_at else ""
        body = (
            "<h1>已确认收到</h1>"
            f"<p class='lead'>谢谢您。学校已经知道您收到了通知{_e(when)}。</p>"
            f"<div class='next'><p><b>接下来：</b>{_e(words.next)}</p></div>"
            + call_button(page.school_phone)
            + _facts(page)
            + _no_name()
        )
        return document("已确认收到", body)
    lead = words.lead.format(school=school, category=page.category_label)
    form = (
        f"<form method='post' action='{_e(action)}'>"
        f"<button class='btn confirm' type='submit' id='confirm'>{_e(words.button)}</button></form>"
    )
    body = (
        f"<h1>{_e(words.title)}</h1>"
        f"<p class='lead'>{_e(lead)}</p>"
        + _facts(page)
        + f"<p>{_e(words.ask)}</p>"
        + form
        + call_button(page.school_phone)
        + _no_name()
    )
    return document(words.title, body)


def invalid_link_page(school: tuple[str, str | None] | None) -> str:
    """A link we cannot show: not one of ours, cut short when copied, or leading to nothing to confirm."""
    if school is not None and school[1]:
        name, phone = school
        help_ = f"<p>这条通知来自{_e(name)}。请直接打学校电话问清楚：</p>" + call_button(phone)
    elif school is not None:
        help_ = f"<p>这条通知来自{_e(school[0])}。请直接与学校联系。</p>"
    else:
        help_ = "<p>如果您收到的是学校的紧急通知，请直接给孩子的学校打电话，或按短信里的提示回复确认码。</p>"
    body = "<h1>链接无效</h1><p class='lead'>这个链接打不开：可能是复制时少了几个字，或者它已经不能用了。</p>" + help_
    return document("链接无效", body)


def front_page(*, name: str, version: str, links: dict[str, str]) -> str:
    items = "".join(f"<li><a href='{_e(url)}'>{_e(label)}</a></li>" for label, url in links.items())
    return document(name, f"<h1>{_e(name)}</h1><p>版本 {_e(version)}</p><ul>{items}</ul>")
