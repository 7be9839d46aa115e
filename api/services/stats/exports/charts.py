"""The monthly-trend charts of a bulletin as PNG images (pure, CPU-bound: run off the event loop).

Drawn with matplotlib's object-oriented API (a ``Figure`` with its own Agg canvas, never ``pyplot``, whose
global state is not safe across the threads ``asyncio.to_thread`` uses). A suppressed month is a gap in the
line, never a point. Chinese text needs a CJK font: the first of :data:`CJK_FAMILIES` installed is used;
without one, the series are numbered in the image and the Word caption names them, so nothing is drawn as
empty boxes.
"""

import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from api.models.stats import IndicatorDef, IndicatorKind, StatsTrend
from api.services.stats.exports import layout
from api.services.stats.exports.workbook import chart_groups

CJK_FAMILIES = (
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
)
DPI = 150


@functools.cache
def cjk_font() -> str | None:
    """The family of an installed font that draws Chinese, or None."""
    from matplotlib import font_manager

    for family in CJK_FAMILIES:
        try:
            font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            continue
        return family
    return None


@dataclass(frozen=True)
class Chart:
    title: str  # the caption under the image (Word carries the Chinese, whatever the image's font)
    indicators: list[IndicatorDef]
    png: bytes


def series(trend: StatsTrend, indicator: IndicatorDef) -> list[float]:
    """The plotted values of one indicator, month by month: the shown figure (a rate as a percentage), NaN
    where it is suppressed or does not apply."""
    out: list[float] = []
    for point in trend.points:
        shown = layout.number(point.cells.get(indicator.key), indicator)
        if shown is None:
            out.append(math.nan)
        else:
            out.append(shown * 100 if indicator.kind == IndicatorKind.rate else float(shown))
    return out


def _month_tick(label_key: str) -> str:
    # "2026-11" → "26/11": short enough for 24 months on an A4 page, and drawable by any font.
    year, _, month = label_key.partition("-")
    return f"{year[2:]}/{month}"


def draw(trend: StatsTrend, indicators: Sequence[IndicatorDef], *, font: str | None) -> bytes:
    """One line chart of some indicators over the trend's months."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 3.2), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    ticks = [_month_tick(p.period.key) for p in trend.points]
    positions = list(range(len(ticks)))
    for number, indicator in enumerate(indicators, start=1):
        label = indicator.name if font else str(number)
        axes.plot(positions, series(trend, indicator), marker="o", markersize=3, linewidth=1.6, label=label)
    axes.set_xticks(positions, ticks, fontsize=7)
    axes.grid(True, axis="y", linewidth=0.4, alpha=0.6)
    unit = "%" if indicators[0].kind == IndicatorKind.rate else indicators[0].unit
    if font or unit.isascii():
        axes.set_ylabel(unit, fontsize=8, family=font)
    axes.tick_params(axis="y", labelsize=7)
    if indicators[0].kind == IndicatorKind.rate:
        axes.set_ylim(0, 100)
    else:
        plotted = [v for i in indicators for v in series(trend, i) if not math.isnan(v)]
        axes.set_ylim(0, max(plotted, default=0) * 1.15 or 1)
    if len(indicators) > 1 or font:
        axes.legend(loc="best", prop={"family": font, "size": 7} if font else {"size": 7})
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def caption(title: str, indicators: Sequence[IndicatorDef], *, font: str | None) -> str:
    if font or len(indicators) == 1:
        return title
    return title + "：" + "；".join(f"{n} {i.name}" for n, i in enumerate(indicators, start=1))


def trend_charts(trend: StatsTrend, *, font: str | None = None) -> list[Chart]:
    """The charts of a trend, grouped as the workbook groups them (the rates together, the rest alone)."""
    if not trend.points:
        return []
    return [
        Chart(caption(title, group, font=font), group, draw(trend, group, font=font))
        for title, group in chart_groups(trend.indicators)
    ]
