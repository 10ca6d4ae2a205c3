"""The monthly report as an Excel workbook (openpyxl, behind this one module): one sheet per table, native charts.

openpyxl writes .xlsx without Excel or LibreOffice and draws charts Excel renders itself (``openpyxl.chart``),
so a DRC office can re-style or copy them; it is imported only when a workbook is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.files import write_private
from gateway.monthly import Chart, MonthlyReport, Sheet

TITLE_SHEET = "说明"


def write_xlsx(report: MonthlyReport, path: Path) -> None:
    """Write ``report`` to ``path`` (owner-only: the late records and samples name subjects)."""
    import io

    from openpyxl import Workbook

    book = Workbook()
    cover = book.active
    assert cover is not None
    cover.title = TITLE_SHEET
    for row in (["报表", "公共信用信息报送月报"], ["月份", str(report.month)], ["部门", report.department],
                ["生成日期", report.made_on.isoformat()], ["时间", "北京时间 (UTC+8)"]):
        cover.append(row)
    cover.column_dimensions["A"].width, cover.column_dimensions["B"].width = 12, 40
    for sheet in report.sheets:
        _write_sheet(book.create_sheet(sheet.name), sheet)
    buffer = io.BytesIO()
    book.save(buffer)
    write_private(path, buffer.getvalue())


def _write_sheet(ws: Any, sheet: Sheet) -> None:
    from openpyxl.styles import Font

    ws.append(sheet.columns)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in sheet.rows:
        ws.append(row)
    ws.freeze_panes = "A2"
    for index, name in enumerate(sheet.columns, start=1):
        width = max([_width(name), *(_width(row[index - 1]) for row in sheet.rows[:200])])
        ws.column_dimensions[ws.cell(row=1, column=index).column_letter].width = min(60, width + 2)
    if "按时率" in sheet.columns:
        col = sheet.columns.index("按时率") + 1
        for r in range(2, len(sheet.rows) + 2):
            ws.cell(row=r, column=col).number_format = "0.0%"
    if sheet.chart is not None and sheet.rows:
        _add_chart(ws, sheet, sheet.chart)


def _width(value: Any) -> int:
    text = "" if value is None else str(value)
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def _add_chart(ws: Any, sheet: Sheet, spec: Chart) -> None:
    from openpyxl.chart import BarChart, LineChart, Reference

    chart = BarChart() if spec.kind == "bar" else LineChart()
    chart.title, chart.y_axis.title, chart.x_axis.title = spec.title, spec.y_title, spec.category
    chart.height, chart.width = 8, 18
    last = len(sheet.rows) + 1
    for name in spec.values:
        col = sheet.columns.index(name) + 1
        chart.add_data(Reference(ws, min_col=col, min_row=1, max_row=last), titles_from_data=True)
    cat = sheet.columns.index(spec.category) + 1
    chart.set_categories(Reference(ws, min_col=cat, min_row=2, max_row=last))
    ws.add_chart(chart, f"{ws.cell(row=1, column=len(sheet.columns) + 2).column_letter}2")
