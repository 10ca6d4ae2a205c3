"""The dashboard's HTML: escaping, tables, the page frame, server-drawn SVG charts and the two languages.

Plain string building, every value escaped here (:func:`esc`), so a page handler never writes markup from data
itself. No script and no outside asset: the one stylesheet ships in ``gateway/web/static``; a page reloads itself
with ``<meta http-equiv="refresh">``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

LANGS = ("zh", "en")
REFRESH_S = 30

NAV = ("overview", "timeliness", "quarantine", "lists", "sanctions", "certificates", "log", "record")
PATHS = {"overview": "/dashboard", **{name: f"/dashboard/{name}" for name in NAV[1:]}}

TEXT: dict[str, dict[str, str]] = {
    "title": {"zh": "信用信息报送网关", "en": "credit-gateway"},
    "overview": {"zh": "总览", "en": "Overview"},
    "timeliness": {"zh": "双公示及时性", "en": "双公示 timeliness"},
    "quarantine": {"zh": "隔离区", "en": "Quarantine"},
    "lists": {"zh": "信用名单", "en": "Credit lists"},
    "sanctions": {"zh": "联合奖惩", "en": "Joint sanctions"},
    "certificates": {"zh": "证书与日历", "en": "Certificates and calendar"},
    "log": {"zh": "同步日志", "en": "Sync log"},
    "record": {"zh": "记录溯源", "en": "Record lineage"},
    "login": {"zh": "登录", "en": "Log in"},
    "logout": {"zh": "退出", "en": "Log out"},
    "token": {"zh": "只读令牌", "en": "Read token"},
    "bad_token": {"zh": "令牌无效", "en": "Unknown token"},
    "bad_form": {"zh": "表单已过期，请重试", "en": "The form expired; try again"},
    "refresh": {"zh": f"每 {REFRESH_S} 秒自动刷新 · 北京时间", "en": f"Refreshes every {REFRESH_S} s · China time"},
    "targets": {"zh": "报送目标", "en": "Targets"},
    "sources": {"zh": "数据来源", "en": "Sources"},
    "target": {"zh": "目标", "en": "Target"},
    "source": {"zh": "来源", "en": "Source"},
    "backlog": {"zh": "积压", "en": "Backlog"},
    "today": {"zh": "今日送达", "en": "Delivered today"},
    "month": {"zh": "本月送达", "en": "Delivered this month"},
    "oldest": {"zh": "最早待送", "en": "Oldest pending"},
    "circuit": {"zh": "熔断状态", "en": "Circuit"},
    "dead": {"zh": "死信", "en": "Dead letters"},
    "last_error": {"zh": "最近错误", "en": "Last error"},
    "last_poll": {"zh": "最近读取", "en": "Last poll"},
    "rows": {"zh": "读取行数", "en": "Rows read"},
    "quarantined": {"zh": "隔离", "en": "Quarantined"},
    "per_day": {"zh": "每日送达（本月）", "en": "Delivered per day (this month)"},
    "instances": {"zh": "实例", "en": "Instances"},
    "dataset": {"zh": "数据集", "en": "Dataset"},
    "department": {"zh": "部门", "en": "Department"},
    "records": {"zh": "记录数", "en": "Records"},
    "on_time": {"zh": "按时", "en": "On time"},
    "late": {"zh": "逾期", "en": "Late"},
    "at_risk": {"zh": "临期", "en": "At risk"},
    "pending": {"zh": "未到期", "en": "Pending"},
    "rate": {"zh": "按时率", "en": "On-time rate"},
    "late_records": {"zh": "逾期记录", "en": "Late records"},
    "rate_per_month": {"zh": "近六个月按时率", "en": "On-time rate, last six months"},
    "show": {"zh": "查询", "en": "Show"},
    "stage": {"zh": "环节", "en": "Stage"},
    "field": {"zh": "字段或代码", "en": "Field or code"},
    "reason": {"zh": "原因", "en": "Reason"},
    "count": {"zh": "条数", "en": "Count"},
    "samples": {"zh": "示例", "en": "Samples"},
    "list_code": {"zh": "名单", "en": "List"},
    "platform": {"zh": "平台", "en": "Platform"},
    "ledger": {"zh": "台账", "en": "Ledger"},
    "version": {"zh": "版本", "en": "Version"},
    "digest": {"zh": "摘要", "en": "Digest"},
    "conflicts": {"zh": "红黑名单冲突", "en": "Red/black conflicts"},
    "in_sync": {"zh": "一致", "en": "in sync"},
    "differs": {"zh": "不一致", "en": "differs"},
    "open": {"zh": "办理中", "en": "Open"},
    "answered": {"zh": "已反馈", "en": "Answered"},
    "overdue": {"zh": "已逾期", "en": "Overdue"},
    "case": {"zh": "案件编号", "en": "Case"},
    "subject": {"zh": "主体", "en": "Subject"},
    "measure": {"zh": "措施", "en": "Measure"},
    "state": {"zh": "状态", "en": "State"},
    "received": {"zh": "收到日期", "en": "Received"},
    "due": {"zh": "反馈期限", "en": "Due"},
    "feedback": {"zh": "反馈（已送达/已收集）", "en": "Feedback (delivered/collected)"},
    "where": {"zh": "位置", "en": "Where"},
    "kind": {"zh": "类型", "en": "Kind"},
    "not_after": {"zh": "到期日", "en": "Expires"},
    "days_left": {"zh": "剩余天数", "en": "Days left"},
    "calendar": {"zh": "工作日日历", "en": "Working-day calendar"},
    "time": {"zh": "时间", "en": "Time"},
    "event": {"zh": "事件", "en": "Event"},
    "key": {"zh": "记录编号", "en": "Record key"},
    "detail": {"zh": "详情", "en": "Detail"},
    "from": {"zh": "起", "en": "From"},
    "to": {"zh": "止", "en": "To"},
    "batches": {"zh": "最近批次", "en": "Recent batches"},
    "batch": {"zh": "批次", "en": "Batch"},
    "receipt": {"zh": "回执", "en": "Receipt"},
    "payload": {"zh": "记录内容（证件号已脱敏）", "en": "Record (ID numbers masked)"},
    "origin": {"zh": "来源行", "en": "Source row"},
    "versions": {"zh": "版本与报送", "en": "Versions and deliveries"},
    "not_found": {"zh": "未找到该记录", "en": "No such record"},
    "none": {"zh": "无", "en": "none"},
    "operation": {"zh": "操作", "en": "Operation"},
    "stage_mapping": {"zh": "网关校验", "en": "gateway check"},
    "stage_target": {"zh": "平台拒收", "en": "refused by the target"},
    "source_key": {"zh": "来源行主键", "en": "Source key"},
    "decision_date": {"zh": "决定日期", "en": "Decision date"},
    "value": {"zh": "值", "en": "Value"},
    "attempts": {"zh": "尝试次数", "en": "Attempts"},
    "red": {"zh": "红名单条目", "en": "Red entry"},
    "black": {"zh": "黑名单条目", "en": "Black entry"},
    "instance": {"zh": "实例", "en": "Instance"},
}


def t(key: str, lang: str) -> str:
    found = TEXT.get(key)
    return found.get(lang, found["zh"]) if found else key


def esc(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:.1f}"
    return html.escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, css: str = "", raw: Sequence[int] = ()) -> str:
    """A table; the columns numbered in ``raw`` hold markup made here (links), every other cell is escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if i in raw else esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="empty">-</td></tr>'
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def link(path: str, text: Any, query: dict[str, Any] | None = None) -> str:
    from urllib.parse import urlencode

    href = path + ("?" + urlencode({k: v for k, v in query.items() if v not in (None, "")}) if query else "")
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def page(active: str, lang: str, body: str, *, csrf: str, who: str, refresh: bool = True) -> str:
    nav = "".join(f'<a href="{PATHS[n]}"{" class=active" if n == active else ""}>{esc(t(n, lang))}</a>' for n in NAV)
    other = "en" if lang == "zh" else "zh"
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (f'<!DOCTYPE html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">{meta}'
            f'<title>{esc(t(active, lang))} · {esc(t("title", lang))}</title>'
            '<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head><body>'
            f'<header><strong>{esc(t("title", lang))}</strong><nav>{nav}</nav><span class="who">{esc(who)} · '
            f'<a id="lang" href="/dashboard/lang/{other}">{"English" if other == "en" else "中文"}</a> · '
            f'<form method="post" action="/dashboard/logout" class="inline"><input type="hidden" name="csrf" '
            f'value="{esc(csrf)}"><button type="submit">{esc(t("logout", lang))}</button></form></span></header>'
            f'<main id="page-{active}"><h1>{esc(t(active, lang))}</h1>{body}</main>'
            f'<footer>{esc(t("refresh", lang))}</footer></body></html>')


def login_page(lang: str, form_token: str, message: str = "") -> str:
    error = f'<p class="error" id="login-error">{esc(message)}</p>' if message else ""
    other = "en" if lang == "zh" else "zh"
    return (f'<!DOCTYPE html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
            f'<title>{esc(t("login", lang))} · {esc(t("title", lang))}</title>'
            '<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head><body class="login">'
            f'<form method="post" action="/dashboard/login" id="login"><h1>{esc(t("title", lang))}</h1>{error}'
            f'<label>{esc(t("token", lang))} <input type="password" name="token" id="token" autocomplete="off"'
            f' required></label><input type="hidden" name="csrf" value="{esc(form_token)}">'
            f'<button type="submit" id="submit">{esc(t("login", lang))}</button>'
            f'<p><a href="/dashboard/lang/{other}">{"English" if other == "en" else "中文"}</a></p>'
            '</form></body></html>')


def bar_chart(points: Sequence[tuple[str, float]], *, title: str, percent_axis: bool = False,
              width: int = 640, height: int = 180) -> str:
    """A bar chart as inline SVG (no script): one bar per (label, value), the value on hover and above the bar."""
    if not points:
        return ""
    top = 1.0 if percent_axis else max(max(v for _, v in points), 1.0)
    step = width / len(points)
    bars = []
    for i, (label, value) in enumerate(points):
        h = (height - 30) * value / top
        x, y = i * step + step * 0.15, height - 18 - h
        shown = percent(value) if percent_axis else f"{value:g}"
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}">'
                    f'<title>{esc(label)}: {esc(shown)}</title></rect>'
                    f'<text x="{x + step * 0.35:.1f}" y="{height - 4}" class="label">{esc(label)}</text>')
        if value:
            bars.append(f'<text x="{x + step * 0.35:.1f}" y="{y - 3:.1f}" class="value">{esc(shown)}</text>')
    return (f'<figure><figcaption>{esc(title)}</figcaption><svg class="chart" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{esc(title)}">{"".join(bars)}</svg></figure>')
