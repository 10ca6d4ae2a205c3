"""The credit-platform sandbox, driven over real HTTP on 127.0.0.1 with a real aiohttp client."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from gateway.errors import ConfigError
from gateway.sandbox.platform import Platform, simulated_reject
from gateway.sandbox.server import (
    Faults,
    Sandbox,
    SandboxConfig,
    build_arg_parser,
    config_from_args,
    faults_from_json,
)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
DEPARTMENT = "11320500MB0000000X"
ORGAN_USCC = "11230500001755309F"
PENALTY: dict[str, Any] = {
    "CF_XDR_MC": "双鸭山智慧城市运营有限公司", "CF_XDR_LB": "法人及非法人组织", "CF_XDR_SHXYM": "91230500MA1B3N1N2M",
    "CF_WSH": "市场【2019】1号", "CF_WFXW": "违反相关产品准入市场规定", "CF_SY": "违反相关产品准入市场规定",
    "CF_YJ": "依据《行业准入规定》", "CF_CFLB": "罚款", "CF_NR": "罚款2000元", "CF_NR_FK": 0.2,
    "CF_JDRQ": "2019-10-10", "CF_YXQ": "2019-10-17", "CF_GSJZQ": "2020-10-17", "CF_CFJG": "双鸭山市公安局",
    "CF_CFJGDM": ORGAN_USCC, "CF_SJLY": "双鸭山市公安局", "CF_SJLYDM": ORGAN_USCC,
}
LICENCE: dict[str, Any] = {
    "XK_XDR_MC": "双鸭山智慧城市运营有限公司", "XK_XDR_LB": "法人及非法人组织", "XK_XKWS": "双环许可证书",
    "XK_WSH": "双环许可2019", "XK_XKLB": "普通", "XK_NR": "许可开展智慧城市建设", "XK_JDRQ": "2019-09-01",
    "XK_YXQZ": "2019-09-05", "XK_YXQZI": "2020-09-22", "XK_XKJG": "双鸭山市公安局", "XK_XKJGDM": ORGAN_USCC,
    "XK_LYDW": "双鸭山市公安局", "XK_LYDWDM": ORGAN_USCC,
}


def record(key: str = "k1", version: int = 1, operation: str = "upsert", data: Any = None,
           **changes: Any) -> dict[str, Any]:
    """A penalty record; ``changes`` override fields of the valid sample."""
    return {"recordKey": key, "version": version, "operation": operation,
            "data": {**PENALTY, **changes} if data is None else data}


def batch(records: Any, batch_id: str = "b-1", table: str = "XZCF", **envelope: Any) -> bytes:
    payload = {"batchId": batch_id, "tableCode": table, "departmentCode": DEPARTMENT, "tableVersionId": "2019",
               "records": records, **envelope}
    return orjson.dumps(payload)


async def post(client: aiohttp.ClientSession, sandbox: Sandbox, body: bytes, key: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """POST an upload; returns status, parsed JSON and the raw bytes of the answer."""
    sent = {**JSON, **({"Idempotency-Key": key} if key else {}), **(headers or {})}
    async with client.post(sandbox.upload_url, data=body, headers=sent) as response:
        raw = await response.read()
        return response.status, orjson.loads(raw), raw


async def get(client: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with client.get(url) as response:
        return response.status, await response.json()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxConfig(token=TOKEN)) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def statuses(answer: dict[str, Any]) -> list[str]:
    return [result["status"] for result in answer["results"]]


class TestAuth:
    async def test_missing_token_is_401(self, sandbox: Sandbox, anonymous: aiohttp.ClientSession) -> None:
        """An upload without Authorization is refused with 401 and errorCode 401."""
        async with anonymous.post(sandbox.upload_url, data=batch([record()]), headers=JSON) as response:
            assert response.status == 401
            assert (await response.json())["errorCode"] == "401"
        assert sandbox.held("XZCF") == {}

    async def test_wrong_token_is_401(self, sandbox: Sandbox, anonymous: aiohttp.ClientSession) -> None:
        """A wrong bearer token is refused with 401."""
        headers = {**JSON, "Authorization": "Bearer not-the-token"}
        async with anonymous.post(sandbox.upload_url, data=batch([record()]), headers=headers) as response:
            assert response.status == 401

    async def test_inspection_needs_token(self, sandbox: Sandbox, anonymous: aiohttp.ClientSession) -> None:
        """The _sandbox endpoints and receipts need the token too."""
        for path in ("/_sandbox/stats", "/_sandbox/faults", "/_sandbox/records", "/api/v1/receipts/b-1"):
            async with anonymous.get(sandbox.url + path) as response:
                assert response.status == 401, path

    async def test_healthz_is_open(self, sandbox: Sandbox, anonymous: aiohttp.ClientSession) -> None:
        """/healthz answers without a token."""
        assert await get(anonymous, sandbox.url + "/healthz") == (200, {"ok": True})


class TestRequestChecks:
    async def test_wrong_content_type_is_415(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """A body that is not declared application/json is refused with 415."""
        headers = {"Content-Type": "text/plain"}
        async with client.post(sandbox.upload_url, data=batch([record()]), headers=headers) as response:
            assert response.status == 415

    async def test_oversized_body_is_413(self, client: aiohttp.ClientSession) -> None:
        """A body over max_body_bytes (by Content-Length) is refused with 413."""
        async with Sandbox(SandboxConfig(token=TOKEN, max_body_bytes=1024)) as small:
            status, answer, _ = await post(client, small, batch([record()] * 10))
            assert (status, answer["errorCode"]) == (413, "413")
            assert small.held("XZCF") == {}

    async def test_oversized_chunked_body_is_413(self, client: aiohttp.ClientSession) -> None:
        """A chunked body that grows past max_body_bytes is refused with 413."""

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * 512

        config = SandboxConfig(token=TOKEN, max_body_bytes=1024)
        async with Sandbox(config) as small, client.post(small.upload_url, data=chunks(), headers=JSON) as response:
            assert response.status == 413


class TestBatchErrors:
    @pytest.mark.parametrize(
        ("body", "code"),
        [
            (b"{not json", "5001"),
            (batch([record()], table=""), "3001"),
            (batch([record()], table="XZZZ"), "3002"),
            (batch([record()], departmentCode=""), "4001"),
            (orjson.dumps({"tableCode": "XZCF", "departmentCode": DEPARTMENT}), "6001"),
            (batch([]), "6001"),
            (batch({"a": 1}), "6002"),
            (batch([record(), "not an object"]), "6002"),
            (b"[1, 2]", "6002"),
        ],
        ids=["unparsable", "table-empty", "table-unknown", "department-empty", "records-missing",
             "records-empty", "records-not-list", "record-not-object", "body-not-object"],
    )
    async def test_whole_batch_error(self, sandbox: Sandbox, client: aiohttp.ClientSession, body: bytes,
                                     code: str) -> None:
        """Each whole-batch error is HTTP 400 with its platform code and no results."""
        status, answer, _ = await post(client, sandbox, body)
        assert (status, answer["errorCode"]) == (400, code)
        assert "results" not in answer
        assert sandbox.stats()["refused"] == 1

    async def test_unregistered_department_is_4002(self, client: aiohttp.ClientSession) -> None:
        """With registered departments, any other departmentCode is refused with 4002."""
        async with Sandbox(SandboxConfig(token=TOKEN, departments=("11111111111111111X",))) as strict:
            status, answer, _ = await post(client, strict, batch([record()]))
            assert (status, answer["errorCode"]) == (400, "4002")

    async def test_registered_department_is_accepted(self, client: aiohttp.ClientSession) -> None:
        """A registered departmentCode passes."""
        async with Sandbox(SandboxConfig(token=TOKEN, departments=(DEPARTMENT,))) as strict:
            status, answer, _ = await post(client, strict, batch([record()]))
            assert (status, statuses(answer)) == (200, ["accepted"])


class TestRecordRules:
    @pytest.mark.parametrize(
        ("bad", "code", "message"),
        [
            (record(CF_XDR_MC=""), "7001", "必填字段为空: CF_XDR_MC"),
            (record(CF_SJLYDM=None), "7001", "必填字段为空: CF_SJLYDM"),
            (record(CF_XDR_MC="企" * 201), "7002", "字段超长: CF_XDR_MC 最大长度200"),
            (record(CF_WSH="号" * 129), "7002", "字段超长: CF_WSH 最大长度128"),
            (record(CF_XDR_SHXYM="91110000600037341N"), "7003", "统一社会信用代码校验失败: CF_XDR_SHXYM"),
            (record(CF_CFJGDM="11230500001755309A"), "7003", "统一社会信用代码校验失败: CF_CFJGDM"),
            (record(CF_JDRQ="2019/10/10"), "7004", "日期格式错误: CF_JDRQ"),
            (record(CF_GSJZQ="2019-02-30"), "7004", "日期格式错误: CF_GSJZQ"),
            (record(key=""), "7005", "记录主键缺失"),
            (record(version=-1), "7006", "版本号无效: version"),
            (record(operation="delete"), "7007", "操作类型无效: delete"),
            (record(data=["not", "an", "object"]), "7008", "数据格式错误: data"),
        ],
        ids=["required-empty", "required-null", "too-long-name", "too-long-wsh", "uscc-subject", "uscc-organ",
             "date-slashes", "date-impossible", "key-missing", "version-negative", "operation-unknown",
             "data-not-object"],
    )
    async def test_rejection_names_the_field(self, sandbox: Sandbox, client: aiohttp.ClientSession,
                                             bad: dict[str, Any], code: str, message: str) -> None:
        """A record breaking a rule is rejected with its code and a message naming the field; others pass."""
        status, answer, _ = await post(client, sandbox, batch([bad, record(key="good")]))
        assert status == 200
        assert answer["results"][0] == {"recordKey": bad["recordKey"], "version": bad["version"],
                                        "status": "rejected", "errorCode": code, "errorMsg": message}
        assert answer["results"][1]["status"] == "accepted"
        assert (answer["successSize"], answer["failSize"], answer["totalSize"]) == (1, 1, 2)
        assert list(sandbox.held("XZCF")) == ["good"]

    async def test_licence_required_fields(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """XZXK records are checked against the XK_* rules."""
        good = {"recordKey": "lic", "version": 1, "operation": "upsert", "data": LICENCE}
        bad = {"recordKey": "lic2", "version": 1, "operation": "upsert", "data": {**LICENCE, "XK_XKWS": ""}}
        _, answer, _ = await post(client, sandbox, batch([good, bad], table="XZXK"))
        assert statuses(answer) == ["accepted", "rejected"]
        assert answer["results"][1]["errorMsg"] == "必填字段为空: XK_XKWS"

    async def test_revoke_needs_only_key_and_version(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """revoke/object/withdraw skip the required-field rule; partial or missing data is fine."""
        records = [record(operation="revoke", data={"CF_WSH": "市场【2019】1号"}),
                   {"recordKey": "k2", "version": 1, "operation": "withdraw"},
                   record(key="k3", operation="object", data={})]
        _, answer, _ = await post(client, sandbox, batch(records))
        assert statuses(answer) == ["accepted"] * 3
        assert sandbox.held("XZCF")["k2"] == (1, "withdraw", {})

    async def test_partial_data_still_checked(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """Fields present in a revoke are still checked for length, code and date."""
        _, answer, _ = await post(client, sandbox, batch([record(operation="revoke", data={"CF_JDRQ": "10/10/2019"})]))
        assert answer["results"][0]["errorMsg"] == "日期格式错误: CF_JDRQ"

    async def test_optional_fields_may_be_empty(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """An empty subject USCC or optional date is not checked; ';'-joined categories fit CF_CFLB."""
        lenient = record(CF_XDR_SHXYM="", CF_GSJZQ="", CF_CFLB="警告;罚款;没收违法所得、没收非法财物;其他-其他")
        _, answer, _ = await post(client, sandbox, batch([lenient]))
        assert statuses(answer) == ["accepted"]


class TestChangesOfRecords:
    async def test_changes_of_a_held_record_get_a_receipt(self, sandbox: Sandbox,
                                                         client: aiohttp.ClientSession) -> None:
        """revoke, object and withdraw of a record the platform holds are applied, each batch with a receipt."""
        await post(client, sandbox, batch([record(key="held")], batch_id="b-0"))
        for version, operation in enumerate(("revoke", "object", "withdraw"), start=2):
            status, answer, _ = await post(client, sandbox, batch(
                [record(key="held", version=version, operation=operation)], batch_id=f"b-{version}"))
            assert status == 200 and statuses(answer) == ["accepted"] and answer["receipt"]["receiptId"]
            assert sandbox.held("XZCF")["held"][:2] == (version, operation)

    @pytest.mark.parametrize("operation", ["revoke", "object", "withdraw"])
    async def test_a_change_of_an_unknown_record_is_refused(self, sandbox: Sandbox, client: aiohttp.ClientSession,
                                                            operation: str) -> None:
        """A bare change (version 2 or later, not the whole record) of a record never received is refused per
        record with 7009; with the whole record it is a record in that state."""
        _, answer, _ = await post(client, sandbox, batch([
            record(key="never", version=2, operation=operation, data={"CF_WSH": "市场【2019】1号"}),
            record(key="fine"), record(key="whole", version=2, operation=operation)]))
        assert answer["results"][0] == {"recordKey": "never", "version": 2, "status": "rejected", "errorCode": "7009",
                                        "errorMsg": "记录不存在: 撤销、异议、撤下只能针对已接收的记录"}
        assert statuses(answer) == ["rejected", "accepted", "accepted"] and answer["receipt"]["failSize"] == 1
        assert "never" not in sandbox.held("XZCF") and sandbox.held("XZCF")["whole"][:2] == (2, operation)


class TestVersions:
    async def test_accepted_duplicate_stale(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """Higher versions are accepted, equal ones are duplicates, lower ones stale; all count as success."""
        _, first, _ = await post(client, sandbox, batch([record(version=2)], "b-1"))
        _, second, _ = await post(client, sandbox, batch([record(version=2), record(version=1)], "b-2"))
        _, third, _ = await post(client, sandbox, batch([record(version=3, CF_NR="罚款3000元")], "b-3"))
        assert statuses(first) + statuses(second) + statuses(third) == ["accepted", "duplicate", "stale", "accepted"]
        assert (second["successSize"], second["failSize"]) == (2, 0)
        version, operation, data = sandbox.held("XZCF")["k1"]
        assert (version, operation, data["CF_NR"]) == (3, "upsert", "罚款3000元")
        assert sandbox.applied_counts("XZCF") == {"k1": 2}

    async def test_versions_within_one_batch(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """Records of one batch are judged in order against each other."""
        records = [record(version=1), record(version=2), record(version=2), record(version=1)]
        _, answer, _ = await post(client, sandbox, batch(records))
        assert statuses(answer) == ["accepted", "accepted", "duplicate", "stale"]
        assert sandbox.held("XZCF")["k1"][0] == 2
        assert sandbox.applied_counts("XZCF") == {"k1": 2}

    async def test_tables_are_separate(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """The same recordKey in XZCF and XZXK are two records."""
        await post(client, sandbox, batch([record(key="same")]))
        licence = {"recordKey": "same", "version": 1, "operation": "upsert", "data": LICENCE}
        _, answer, _ = await post(client, sandbox, batch([licence], "b-2", table="XZXK"))
        assert statuses(answer) == ["accepted"]
        assert sandbox.stats()["held"] == {"XZCF": 1, "XZXK": 1, "LHJC_FK": 0, "XYMD": 0}


class TestIdempotency:
    async def test_replay_returns_identical_body(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """The same key and body get the stored answer byte for byte, and nothing is applied again."""
        body = batch([record(), record(key="k2")])
        first = await post(client, sandbox, body, key="b-1")
        again = await post(client, sandbox, body, key="b-1")
        assert again[0] == 200
        assert again[2] == first[2]
        assert sandbox.applied_counts("XZCF") == {"k1": 1, "k2": 1}
        assert sandbox.stats()["replayed"] == 1

    async def test_batch_id_is_the_key_without_header(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """Without an Idempotency-Key header the batchId is the key."""
        body = batch([record()], "b-9")
        first = await post(client, sandbox, body)
        again = await post(client, sandbox, body)
        assert again[2] == first[2]
        assert statuses(again[1]) == ["accepted"]

    async def test_other_body_under_used_key_is_409(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """A different body under a used key is refused with 409 and applies nothing."""
        await post(client, sandbox, batch([record()]), key="b-1")
        status, answer, _ = await post(client, sandbox, batch([record(version=2)]), key="b-1")
        assert (status, answer["errorCode"]) == (409, "409")
        assert sandbox.held("XZCF")["k1"][0] == 1

    async def test_refused_batch_is_not_remembered(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """A key whose batch was refused (400) can be used again."""
        await post(client, sandbox, batch([record()], table="XZZZ"), key="b-1")
        status, answer, _ = await post(client, sandbox, batch([record()]), key="b-1")
        assert (status, statuses(answer)) == (200, ["accepted"])


class TestReceipts:
    async def test_receipt_hashes_the_exact_body(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """bodySha256 is the sha256 of the bytes sent; the receipt carries the batch and sizes."""
        body = batch([record(), record(key="bad", CF_JDRQ="x")], "b-7")
        _, answer, _ = await post(client, sandbox, body)
        receipt = answer["receipt"]
        assert receipt["bodySha256"] == hashlib.sha256(body).hexdigest()
        assert (receipt["batchId"], receipt["successSize"], receipt["failSize"]) == ("b-7", 1, 1)
        assert receipt["receiptId"].startswith("r-")
        assert receipt["receivedAt"].endswith("Z")
        assert receipt["platform"] == "sandbox"

    async def test_get_receipt(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """GET /api/v1/receipts/{batchId} returns the receipt sent with the answer."""
        _, answer, _ = await post(client, sandbox, batch([record()], "b-7"))
        assert await get(client, sandbox.url + "/api/v1/receipts/b-7") == (200, answer["receipt"])

    async def test_unknown_receipt_is_404(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """A batch never answered has no receipt."""
        status, answer = await get(client, sandbox.url + "/api/v1/receipts/b-none")
        assert (status, answer["errorCode"]) == (404, "404")


class TestFaults:
    async def test_error_rate_answers_503_with_retry_after(self, client: aiohttp.ClientSession) -> None:
        """error_rate=1 answers every upload 503 with Retry-After and errorCode 500, applying nothing."""
        faults = Faults(error_rate=1.0, retry_after_s=2)
        async with Sandbox(SandboxConfig(token=TOKEN, faults=faults)) as faulty:
            async with client.post(faulty.upload_url, data=batch([record()]), headers=JSON) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "2"
                assert (await response.json())["errorCode"] == "500"
            assert faulty.held("XZCF") == {}
            assert faulty.stats()["faults_injected"]["error"] == 1

    async def test_error_status_429(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """error_status chooses the status of injected errors."""
        sandbox.set_faults(Faults(error_rate=1.0, error_status=429, retry_after_s=0.5))
        async with client.post(sandbox.upload_url, data=batch([record()]), headers=JSON) as response:
            assert (response.status, response.headers["Retry-After"]) == (429, "1")

    async def test_reject_rate_is_deterministic(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """reject_rate refuses the same records (7099) when the same batch is sent again after a reset."""
        sandbox.set_faults(Faults(reject_rate=0.5, seed=7))
        body = batch([record(key=f"k{i}") for i in range(40)])
        _, first, _ = await post(client, sandbox, body)
        await client.post(sandbox.url + "/_sandbox/reset")
        _, again, _ = await post(client, sandbox, body)
        rejected = [r["recordKey"] for r in first["results"] if r["status"] == "rejected"]
        assert 0 < len(rejected) < 40
        assert {r["errorCode"] for r in first["results"] if r["status"] == "rejected"} == {"7099"}
        assert again["results"] == first["results"]
        assert sandbox.stats()["faults_injected"]["reject"] == len(rejected)

    async def test_drop_commits_then_disconnects(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """drop_rate=1 commits the batch but closes the connection; a retry gets the stored answer."""
        sandbox.set_faults(Faults(drop_rate=1.0))
        body = batch([record(), record(key="k2")])
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await post(client, sandbox, body, key="b-1")
        assert set(sandbox.held("XZCF")) == {"k1", "k2"}
        sandbox.set_faults(Faults())
        status, answer, _ = await post(client, sandbox, body, key="b-1")
        assert (status, statuses(answer)) == (200, ["accepted", "accepted"])
        assert await get(client, sandbox.url + "/api/v1/receipts/b-1") == (200, answer["receipt"])
        assert sandbox.applied_counts("XZCF") == {"k1": 1, "k2": 1}
        assert sandbox.stats()["faults_injected"]["drop"] == 1

    async def test_fail_after_commit(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """fail_after_commit_rate=1 commits, answers 500, and a retry gets the stored accepted answer."""
        sandbox.set_faults(Faults(fail_after_commit_rate=1.0))
        body = batch([record()])
        status, answer, _ = await post(client, sandbox, body)
        assert (status, answer["errorCode"]) == (500, "500")
        sandbox.set_faults(Faults())
        _, retried, _ = await post(client, sandbox, body)
        assert statuses(retried) == ["accepted"]
        assert sandbox.applied_counts("XZCF") == {"k1": 1}

    async def test_timeout_hangs_past_client_timeout(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """timeout_rate=1 hangs the request, so the client times out; nothing is applied."""
        sandbox.set_faults(Faults(timeout_rate=1.0, timeout_s=30))
        with pytest.raises(TimeoutError):
            async with client.post(sandbox.upload_url, data=batch([record()]), headers=JSON,
                                   timeout=aiohttp.ClientTimeout(total=0.3)):
                pass
        assert sandbox.held("XZCF") == {}
        assert sandbox.stats()["faults_injected"]["timeout"] == 1

    async def test_timeout_ends_without_answer(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """After timeout_s the sandbox closes the connection without answering."""
        sandbox.set_faults(Faults(timeout_rate=1.0, timeout_s=0.1))
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await post(client, sandbox, batch([record()]))
        assert sandbox.held("XZCF") == {}

    async def test_delay(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """delay_s holds every upload at least that long before answering."""
        sandbox.set_faults(Faults(delay_s=0.2))
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, _, _ = await post(client, sandbox, batch([record()]))
        assert status == 200
        assert loop.time() - started >= 0.2

    async def test_faults_set_over_http(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """POST /_sandbox/faults changes the named fields at run time; GET shows them."""
        async with client.post(sandbox.url + "/_sandbox/faults", json={"error_rate": 1, "retry_after_s": 3}) as r:
            assert r.status == 200
        status, faults = await get(client, sandbox.url + "/_sandbox/faults")
        assert (faults["error_rate"], faults["retry_after_s"], faults["error_status"]) == (1.0, 3.0, 503)
        assert sandbox.faults == Faults(error_rate=1.0, retry_after_s=3.0)
        status, _, _ = await post(client, sandbox, batch([record()]))
        assert status == 503

    @pytest.mark.parametrize("change", [{"error_rate": 2}, {"no_such_fault": 1}, {"seed": "x"}, {"error_status": 200}])
    async def test_bad_faults_over_http_are_400(self, sandbox: Sandbox, client: aiohttp.ClientSession,
                                                change: dict[str, Any]) -> None:
        """Invalid or unknown fault fields are refused and the faults stay as they were."""
        async with client.post(sandbox.url + "/_sandbox/faults", json=change) as response:
            assert response.status == 400
        assert sandbox.faults == Faults()


class TestInspection:
    async def test_stats(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """/_sandbox/stats counts requests, batches and record outcomes."""
        await post(client, sandbox, batch([record(), record(), record(key="bad", CF_WFXW="")]))
        _, stats = await get(client, sandbox.url + "/_sandbox/stats")
        assert {k: stats[k] for k in ("requests", "batches", "records_received", "accepted", "duplicate",
                                      "stale", "rejected")} == {"requests": 1, "batches": 1, "records_received": 3,
                                                                "accepted": 1, "duplicate": 1, "stale": 0,
                                                                "rejected": 1}
        assert stats["held"] == {"XZCF": 1, "XZXK": 0, "LHJC_FK": 0, "XYMD": 0}
        assert stats["faults_injected"]["error"] == 0

    async def test_list_records(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """/_sandbox/records pages through held records with their counts."""
        await post(client, sandbox, batch([record(key=f"k{i}") for i in range(5)] + [record(key="k0")]))
        status, page = await get(client, sandbox.url + "/_sandbox/records?tableCode=XZCF&limit=2&offset=0")
        assert status == 200
        assert [r["recordKey"] for r in page] == ["k0", "k1"]
        assert (page[0]["applied_count"], page[0]["received_count"], page[0]["version"]) == (1, 2, 1)
        _, rest = await get(client, sandbox.url + "/_sandbox/records?tableCode=XZCF&limit=10&offset=2")
        assert [r["recordKey"] for r in rest] == ["k2", "k3", "k4"]

    async def test_bad_paging_is_400(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """A non-numeric or negative limit is refused."""
        status, _ = await get(client, sandbox.url + "/_sandbox/records?limit=-1")
        assert status == 400

    async def test_one_record_by_encoded_key(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """/_sandbox/records/{tableCode}/{recordKey} finds a key with '|', '/' and Chinese in it."""
        key = "penalty|苏市监罚〔2026〕12号/补|11320500"
        await post(client, sandbox, batch([record(key=key)]))
        await post(client, sandbox, batch([record(key=key, version=2)], "b-2"))
        status, held = await get(client, f"{sandbox.url}/_sandbox/records/XZCF/{quote(key, safe='')}")
        assert status == 200
        assert (held["recordKey"], held["version"], held["applied_count"]) == (key, 2, 2)
        assert held["received"] == {"1": 1, "2": 1}

    async def test_unknown_record_is_404(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """A key never held is 404."""
        status, _ = await get(client, sandbox.url + "/_sandbox/records/XZCF/none")
        assert status == 404

    async def test_reset(self, sandbox: Sandbox, client: aiohttp.ClientSession) -> None:
        """POST /_sandbox/reset forgets records, batches and counters."""
        body = batch([record()])
        await post(client, sandbox, body)
        async with client.post(sandbox.url + "/_sandbox/reset") as response:
            assert response.status == 200
        assert sandbox.held("XZCF") == {}
        assert sandbox.stats()["held"]["XZCF"] == 0
        _, answer, _ = await post(client, sandbox, body)
        assert statuses(answer) == ["accepted"]


class TestPersistence:
    async def test_restart_keeps_records_and_answers(self, tmp_path: Path, client: aiohttp.ClientSession) -> None:
        """With a file database, held records, counts and stored answers survive a restart."""
        config = SandboxConfig(token=TOKEN, db_path=str(tmp_path / "sandbox.db"))
        body = batch([record(), record(key="k2")])
        async with Sandbox(config) as first:
            _, _, answered = await post(client, first, body, key="b-1")
        async with Sandbox(config) as second:
            assert set(second.held("XZCF")) == {"k1", "k2"}
            assert second.stats()["held"]["XZCF"] == 2
            status, _, replayed = await post(client, second, body, key="b-1")
            assert (status, replayed) == (200, answered)
            _, answer, _ = await post(client, second, batch([record()], "b-2"))
            assert statuses(answer) == ["duplicate"]
            assert second.applied_counts("XZCF") == {"k1": 1, "k2": 1}



class TestLifecycle:
    async def test_not_started(self) -> None:
        """Using a sandbox that is not running is an error, not a hang."""
        idle = Sandbox(SandboxConfig(token=TOKEN))
        with pytest.raises(RuntimeError):
            idle.held("XZCF")
        with pytest.raises(RuntimeError):
            _ = idle.url

    async def test_port_in_use_fails_cleanly(self, sandbox: Sandbox) -> None:
        """Starting on a port already taken raises OSError and leaves nothing open."""
        port = int(sandbox.url.rsplit(":", 1)[1])
        other = Sandbox(SandboxConfig(token=TOKEN, port=port))
        with pytest.raises(OSError):
            await other.start()
        with pytest.raises(RuntimeError):
            other.held("XZCF")

    async def test_start_again_after_aclose(self, tmp_path: Path, client: aiohttp.ClientSession) -> None:
        """The same Sandbox object can be started again after aclose."""
        server = Sandbox(SandboxConfig(token=TOKEN, db_path=str(tmp_path / "db")))
        for version in (1, 2):
            async with server:
                _, answer, _ = await post(client, server, batch([record(version=version)], f"b-{version}"))
                assert statuses(answer) == ["accepted"]
                assert server.applied_counts("XZCF") == {"k1": version}


class TestConfig:
    def parse(self, *argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        build_arg_parser(parser)
        return parser.parse_args(argv)

    def test_flags_become_config(self) -> None:
        """Every flag lands in SandboxConfig or Faults."""
        args = self.parse("--token", "t", "--port", "8080", "--department", "A", "--department", "B",
                          "--name", "苏州", "--db", "x.db", "--error-rate", "0.1", "--retry-after", "2",
                          "--timeout", "5", "--drop-rate", "0.2", "--seed", "3")
        config = config_from_args(args)
        assert (config.port, config.departments) == (8080, ("A", "B"))
        assert (config.platform_name, config.db_path) == ("苏州", "x.db")
        assert config.faults == Faults(error_rate=0.1, retry_after_s=2, timeout_s=5, drop_rate=0.2, seed=3)

    def test_token_from_file_or_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The token may come from --token-file or CG_SANDBOX_TOKEN."""
        (tmp_path / "token").write_text("from-file\n")
        assert config_from_args(self.parse("--token-file", str(tmp_path / "token"))).token == "from-file"
        monkeypatch.setenv("CG_SANDBOX_TOKEN", "from-env")
        assert config_from_args(self.parse()).token == "from-env"

    def test_missing_token_is_config_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without any token the config is refused."""
        monkeypatch.delenv("CG_SANDBOX_TOKEN", raising=False)
        with pytest.raises(ConfigError, match="--token"):
            config_from_args(self.parse())

    def test_bad_options_are_reported_together(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A missing token and bad fault flags are named in one ConfigError, by flag."""
        monkeypatch.delenv("CG_SANDBOX_TOKEN", raising=False)
        with pytest.raises(ConfigError) as caught:
            config_from_args(self.parse("--error-rate", "2", "--delay", "-1"))
        assert {p.path for p in caught.value.problems} == {"--token", "--error-rate", "--delay"}

    def test_bad_faults_are_all_reported(self) -> None:
        """Every invalid fault value is named at once."""
        with pytest.raises(ConfigError) as caught:
            Faults(error_rate=1.5, drop_rate=-0.1, delay_s=-1)
        assert {p.path for p in caught.value.problems} == {"error_rate", "drop_rate", "delay_s"}

    def test_faults_from_json_keeps_other_fields(self) -> None:
        """Changing one fault keeps the others."""
        assert faults_from_json(Faults(seed=5), {"drop_rate": 0.5}) == Faults(seed=5, drop_rate=0.5)


class TestProcess:
    async def test_python_m_serves_until_sigterm(self, tmp_path: Path, client: aiohttp.ClientSession) -> None:
        """`python -m gateway.sandbox` writes its URL to the ready file, serves, and exits 0 on SIGTERM."""
        ready = tmp_path / "ready"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.sandbox", "--port", "0", "--ready-file", str(ready), "--token", TOKEN,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            url = await wait_for_ready_file(ready, process)
            async with client.post(url + "/api/v1/upload", data=batch([record()]), headers=JSON) as response:
                assert response.status == 200
                assert statuses(await response.json()) == ["accepted"]
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            stdout, _ = await asyncio.wait_for(process.communicate(), timeout=20)
        assert process.returncode == 0
        assert stdout.decode().strip() == f"sandbox listening on {url}"


async def wait_for_ready_file(ready: Path, process: asyncio.subprocess.Process) -> str:
    """Poll for the ready file (bounded: 20 s in 50 ms steps); fail early if the process dies."""
    for _ in range(400):
        url = read_if_exists(ready)
        if url:
            return url
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"sandbox never became ready (exit code {process.returncode})")


def read_if_exists(path: Path) -> str:
    """The stripped text of ``path``, or "" while it does not exist."""
    return path.read_text().strip() if path.exists() else ""


class TestArrivalCounts:
    """Every arrival of a (recordKey, version) is counted once, whatever became of it, in the database file."""

    def test_counts_follow_versions(self, tmp_path: Path) -> None:
        """Duplicates and stale versions are counted; a superseded version keeps its count."""
        platform = Platform(str(tmp_path / "sandbox.db"))
        try:
            platform.upload(batch([record(version=1), record(version=1)], "b-1"), None)
            platform.upload(batch([record(version=2), record(version=1), record(version=3)], "b-2"), None)
            platform.upload(batch([record(version=3), record(version=2)], "b-3"), None)
            view = platform.store.get_record("XZCF", "k1")
            assert view is not None
            assert (view["version"], view["applied_count"], view["received_count"]) == (3, 3, 2)
            assert view["received"] == {"1": 3, "2": 2, "3": 2}
            assert platform.store.list_records("XZCF", 10, 0)[0]["received_count"] == 2
        finally:
            platform.store.close()

    def test_a_version_refused_first_then_accepted_counts_both_arrivals(self, tmp_path: Path) -> None:
        """A simulated rejection is an arrival too: accepted later, the version shows both."""
        key = next(f"k{i}" for i in range(1000) if simulated_reject(f"k{i}", 1, 0.5, 3))
        platform = Platform(str(tmp_path / "sandbox.db"))
        try:
            first = orjson.loads(platform.upload(batch([record(key=key)], "b-1"), None, reject_rate=0.5, seed=3).body)
            assert first["results"][0]["errorCode"] == "7099"
            platform.upload(batch([record(key=key)], "b-2"), None)
            view = platform.store.get_record("XZCF", key)
            assert view is not None
            assert (view["received_count"], view["received"]) == (2, {"1": 2})
        finally:
            platform.store.close()

    def test_a_database_of_an_earlier_version_is_migrated(self, tmp_path: Path) -> None:
        """Held versions' counts move from the received table into held when an older file is opened."""
        path = tmp_path / "old.db"
        conn = sqlite3.connect(path)
        conn.executescript("""
            CREATE TABLE held (id INTEGER PRIMARY KEY, table_code TEXT NOT NULL, record_key TEXT NOT NULL,
                version INTEGER NOT NULL, operation TEXT NOT NULL, data BLOB NOT NULL,
                applied_count INTEGER NOT NULL, UNIQUE (table_code, record_key));
            CREATE TABLE received (table_code TEXT NOT NULL, record_key TEXT NOT NULL, version INTEGER NOT NULL,
                count INTEGER NOT NULL, PRIMARY KEY (table_code, record_key, version)) WITHOUT ROWID;
            INSERT INTO held VALUES (1, 'XZCF', 'k1', 2, 'upsert', '{}', 2);
            INSERT INTO received VALUES ('XZCF', 'k1', 1, 1), ('XZCF', 'k1', 2, 4);
        """)
        conn.close()
        platform = Platform(str(path))
        try:
            view = platform.store.get_record("XZCF", "k1")
            assert view is not None
            assert (view["received_count"], view["received"]) == (4, {"1": 1, "2": 4})
            platform.upload(batch([record(version=2)], "b-1"), None)
        finally:
            platform.store.close()
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT version, count FROM received").fetchall() == [(1, 1)]
        assert conn.execute("SELECT received_count FROM held").fetchall() == [(5,)]
        conn.close()
