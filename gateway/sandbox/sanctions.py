"""The sandbox platform's side of the joint-sanction (联合奖惩) loop: issuing cases, taking feedback.

The platform issues a case (one subject, one measure) to an implementing department; the department's
gateway pulls new cases from a feed; the department's feedback comes back through the ordinary upload API
as table ``LHJC_FK``, so it gets the same receipts, faults and per-record results as any other table, plus
one rule of its own: feedback must name a case the platform issued (else ``7101``), with that case's
measure (else ``7102``). ``gateway.sandbox.server`` hooks this in with :class:`SanctionsDesk`.

Protocol (bearer token as for uploads)::

    GET  /api/v1/sanctions/cases?departmentCode=&after=<cursor>&limit=<n>
        200 {"errorCode": "200", "cases": [{"seq", "caseId", "operation": upsert|revoke, "data": {LH_*}}],
             "cursor": <last seq>, "more": bool, "manifest": {...}, "manifestSignature": base64 (when the
             sandbox signs receipts)}
        The manifest names the platform, department, ``after``, ``cursor``, ``count`` and ``casesSha256``
        (SHA-256 of the ``cases`` array as compact JSON); the signature covers the manifest as JSON with
        sorted keys, like a receipt. 400 4001 without departmentCode; 4002 department not registered.
    POST /_sandbox/sanctions/cases   {"department": "", "operation": "upsert", "cases": [{LH_* fields}]}
        issue (or re-issue, or with operation "revoke" withdraw) cases; answers {"issued": [{"caseId", "seq"}]}
    GET  /_sandbox/sanctions         every case with its state: issued → fetched → answered (or revoked),
                                     and the feedback held for it

Case fields (``LH_*``): AJBH 案件编号, JCLX 奖惩类型, BWLBM/BWLMC 合作备忘录编码/名称, CSBM/CSMC 措施编码/名称,
CSXZ 措施细则, FLYJ 法律及政策依据, ZTMC 主体名称, ZTLB 主体类别, TYSHXYDM, FDDBR, ZJLX/ZJHM 证件类型/号码,
FQBM/FQBMDM 发起部门/代码, XZQZ/XZQZI 限制期限自/至, FQRQ 发起日期, DFBM 行政区划, BZ.
Feedback fields (``FK_*``): AJBH, CSBM, CSMC, SXBM/SXMC 事项编码/名称, JG 执行结果, JGSM 说明, JE 金额(元),
ZXRQ 执行日期, ZXBM/ZXBMDM 执行部门/代码, DFBM, ZTMC, TYSHXYDM, ZJHM, BZ.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web

from gateway.sandbox.platform import TABLES, Platform, RecordProblem, SandboxStore, TableSpec, error_body

T = TypeVar("T")
FEEDBACK_TABLE = "LHJC_FK"
CASE_KEY = "LH_AJBH"
FEED_LIMIT = 1000

TABLES[FEEDBACK_TABLE] = TableSpec(
    code=FEEDBACK_TABLE,
    required=("FK_AJBH", "FK_CSBM", "FK_SXBM", "FK_SXMC", "FK_JG", "FK_ZXRQ", "FK_ZXBM", "FK_ZXBMDM", "FK_DFBM"),
    max_lengths=(("FK_AJBH", 64), ("FK_CSBM", 64), ("FK_SXBM", 64), ("FK_SXMC", 256), ("FK_JG", 64),
                 ("FK_JGSM", 2000), ("FK_ZXBM", 200), ("FK_ZXBMDM", 18), ("FK_DFBM", 6), ("FK_ZJHM", 64)),
    uscc_fields=("FK_ZXBMDM", "FK_TYSHXYDM"),
    date_fields=("FK_ZXRQ",),
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sanction_cases (
    case_id    TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL UNIQUE,
    department TEXT    NOT NULL,
    operation  TEXT    NOT NULL,
    data       BLOB    NOT NULL,
    issued_at  TEXT    NOT NULL,
    fetched_at TEXT
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CaseBook:
    """The platform's cases in the sandbox database; use it from the sandbox's database thread only."""

    def __init__(self, store: SandboxStore, platform: str, signer: Callable[[bytes], bytes] | None) -> None:
        self.store, self.platform, self.signer = store, platform, signer
        self.db = store.connection
        self.db.executescript(_SCHEMA)

    def issue(self, cases: Sequence[Mapping[str, Any]], department: str = "", operation: str = "upsert") -> list[int]:
        """Issue (or re-issue) cases; each gets the next feed position. ValueError names a case without an id."""
        if operation not in ("upsert", "revoke"):
            raise ValueError(f"operation must be upsert or revoke, got {operation!r}")
        for i, case in enumerate(cases):
            if not isinstance(case, Mapping) or not str(case.get(CASE_KEY) or "").strip():
                raise ValueError(f"cases[{i}]: {CASE_KEY} (案件编号) is required")
        seqs = []
        with self.store.transaction():
            top = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM sanction_cases").fetchone()[0]
            for case in cases:
                top += 1
                self.db.execute(
                    "INSERT INTO sanction_cases VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (case_id) DO UPDATE "
                    "SET seq = excluded.seq, department = excluded.department, operation = excluded.operation, "
                    "data = excluded.data, issued_at = excluded.issued_at, fetched_at = NULL",
                    (str(case[CASE_KEY]).strip(), top, department, operation, orjson.dumps(dict(case)), _now()))
                seqs.append(top)
        return seqs

    def feed(self, department: str, after: int, limit: int) -> dict[str, Any]:
        """Cases for ``department`` after feed position ``after``: the answer, with its signed manifest."""
        with self.store.transaction():
            rows = self.db.execute(
                "SELECT seq, case_id, operation, data FROM sanction_cases WHERE seq > ? AND department IN ('', ?) "
                "ORDER BY seq LIMIT ?", (after, department, limit + 1)).fetchall()
            page = rows[:limit]
            self.db.executemany("UPDATE sanction_cases SET fetched_at = COALESCE(fetched_at, ?) WHERE case_id = ?",
                                [(_now(), row[1]) for row in page])
        cases = [{"seq": seq, "caseId": case_id, "operation": op, "data": orjson.loads(data)}
                 for seq, case_id, op, data in page]
        cursor = cases[-1]["seq"] if cases else after
        manifest = {"platform": self.platform, "departmentCode": department, "after": after, "cursor": cursor,
                    "count": len(cases), "casesSha256": hashlib.sha256(orjson.dumps(cases)).hexdigest(),
                    "issuedAt": _now()}
        answer: dict[str, Any] = {"errorCode": "200", "errorMsg": "成功", "cases": cases, "cursor": cursor,
                                  "more": len(rows) > limit, "manifest": manifest}
        if self.signer is not None:
            signature = self.signer(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS))
            answer["manifestSignature"] = base64.b64encode(signature).decode()
        return answer

    def check_feedback(self, record: dict[str, Any]) -> RecordProblem | None:
        """Feedback must name an issued case and that case's measure."""
        data = record.get("data") or {}
        case_id = str(data.get("FK_AJBH") or "")
        if not case_id:
            return None  # a withdrawal without data: nothing to check
        row = self.db.execute("SELECT data FROM sanction_cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            return "7101", f"案件不存在: {case_id}"
        measure = orjson.loads(row[0]).get("LH_CSBM")
        if measure and data.get("FK_CSBM") != measure:
            return "7102", f"措施编码与案件不符: {data.get('FK_CSBM')} (案件 {case_id} 为 {measure})"
        return None

    def states(self) -> list[dict[str, Any]]:
        """Every case, in feed order, with its state and the feedback held for it."""
        feedback: dict[str, list[dict[str, Any]]] = {}
        for key, (version, operation, data) in self.store.held(FEEDBACK_TABLE).items():
            feedback.setdefault(str(data.get("FK_AJBH")), []).append({
                "recordKey": key, "version": version, "operation": operation, "measure": data.get("FK_CSBM"),
                "matter": data.get("FK_SXBM"), "result": data.get("FK_JG"), "executedDate": data.get("FK_ZXRQ")})
        out = []
        for seq, case_id, department, op, data, issued, fetched in self.db.execute(
                "SELECT seq, case_id, department, operation, data, issued_at, fetched_at FROM sanction_cases "
                "ORDER BY seq"):
            case = orjson.loads(data)
            answers = sorted(feedback.get(case_id, []), key=lambda f: f["recordKey"])
            state = "revoked" if op == "revoke" else "answered" if answers else "fetched" if fetched else "issued"
            out.append({"caseId": case_id, "seq": seq, "department": department, "state": state,
                        "subject": case.get("LH_ZTMC"), "measure": case.get("LH_CSBM"), "issuedAt": issued,
                        "fetchedAt": fetched, "feedback": answers})
        return out

    def reset(self) -> None:
        with self.store.transaction():
            self.db.execute("DELETE FROM sanction_cases")


class SanctionsDesk:
    """The sandbox's sanction endpoints and the Python methods tests and the demo use.

    ``in_db`` / ``in_db_now`` run a function in the sandbox's database thread (awaited, or blocking).
    """

    def __init__(self, in_db: Callable[..., Any], in_db_now: Callable[..., Any]) -> None:
        self._in_db, self._in_db_now = in_db, in_db_now
        self._book: CaseBook | None = None
        self._departments: frozenset[str] = frozenset()

    async def attach(self, platform: Platform, name: str, signer: Callable[[bytes], bytes] | None,
                     departments: Sequence[str] = ()) -> None:
        """Open the case tables in the platform's database and make uploads of feedback check them."""
        self._book = await self._in_db(CaseBook, platform.store, name, signer)
        platform.record_checks[FEEDBACK_TABLE] = self._book.check_feedback
        self._departments = frozenset(departments)

    def book(self) -> CaseBook:
        if self._book is None:
            raise RuntimeError("sandbox not started")
        return self._book

    # ------------------------------------------------------------ for tests and the demo

    def issue(self, cases: Sequence[Mapping[str, Any]], department: str = "", operation: str = "upsert") -> list[int]:
        """Issue cases now (blocking); returns their feed positions."""
        result: list[int] = self._in_db_now(self.book().issue, cases, department, operation)
        return result

    def states(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._in_db_now(self.book().states)
        return result

    async def reset(self) -> None:
        if self._book is not None:
            await self._in_db(self._book.reset)

    # ------------------------------------------------------------ HTTP

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/sanctions/cases", self._feed)
        app.router.add_post("/_sandbox/sanctions/cases", self._issue)
        app.router.add_get("/_sandbox/sanctions", self._states)

    async def _feed(self, request: web.Request) -> web.Response:
        department = request.query.get("departmentCode", "")
        if not department:
            return _error(400, "4001", "部门编码为空: departmentCode")
        if self._departments and department not in self._departments:
            return _error(400, "4002", f"部门编码不存在: {department}")
        try:
            after = int(request.query.get("after") or 0)
            limit = min(int(request.query.get("limit") or FEED_LIMIT), FEED_LIMIT)
        except ValueError:
            return _error(400, "400", "after/limit 应为整数")
        if after < 0 or limit <= 0:
            return _error(400, "400", "after 应 ≥ 0, limit 应 > 0")
        return _json(200, await self._in_db(self.book().feed, department, after, limit))

    async def _issue(self, request: web.Request) -> web.Response:
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "5001", "JSON解析失败")
        if not isinstance(payload, dict) or not isinstance(payload.get("cases"), list):
            return _error(400, "6002", 'expected {"cases": [...], "department": "", "operation": "upsert"}')
        try:
            seqs = await self._in_db(self.book().issue, payload["cases"], str(payload.get("department") or ""),
                                     str(payload.get("operation") or "upsert"))
        except ValueError as exc:
            return _error(400, "6002", str(exc))
        issued = [{"caseId": str(c[CASE_KEY]).strip(), "seq": s} for c, s in zip(payload["cases"], seqs, strict=True)]
        return _json(200, {"issued": issued})

    async def _states(self, _request: web.Request) -> web.Response:
        return _json(200, {"cases": await self._in_db(self.book().states)})


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", charset="utf-8")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(code, message), content_type="application/json",
                        charset="utf-8")
