"""One level of a statistics table as CSV (pure): UTF-8 with a BOM so that Excel opens the Chinese headers
correctly, one row per unit and a 合计 row, the same figures and the same suppression marks as the workbook.
Rates are written as percentages (``97.3%``), which Excel reads back as numbers."""

import csv
import io
import uuid
from collections.abc import Mapping

from api.models.stats import StatsRow, StatsTable
from api.services.stats.exports import layout

MEDIA_TYPE = "text/csv; charset=utf-8"
# A cell starting with one of these is a formula to Excel (CSV injection): such text gets a leading quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def table_csv(table: StatsTable, parents: Mapping[uuid.UUID, str] | None = None) -> bytes:
    """The table as CSV; ``parents`` names the units the rows belong to (the township of each school),
    written as a column when known."""
    names = dict(parents or {})
    parent = layout.parent_header(table, names)
    cols = layout.columns(table.indicators)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["序号", layout.LEVEL_NAMES[table.level]] + ([parent] if parent else []) + [c.header for c in cols])

    def line(number: int | None, row: StatsRow, name: str) -> list[str]:
        out = ["" if number is None else str(number), safe(name)]
        if parent:
            out.append(safe(names.get(row.parent_id, "")) if number is not None and row.parent_id else "")
        out += [layout.text(c.cell(row), c.indicator, table.threshold) for c in cols]
        return out

    for number, row in enumerate(table.rows, start=1):
        writer.writerow(line(number, row, row.unit_name))
    writer.writerow(line(None, table.total, layout.TOTAL_NAME))
    return buffer.getvalue().encode("utf-8-sig")
