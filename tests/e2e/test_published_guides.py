"""A department publishes a service guide through the open API, and citizens asking the running
assistant find it without a restart: the action server's GuideWatcher indexes it in the background
(KB_REFRESH_S, 1 s in this stack). Then the department changes it, and the answer changes."""
from __future__ import annotations

import time
import uuid

import pytest

from services.api_keys import ApiKeys
from tests.e2e.conftest import Running, joined

pytestmark = pytest.mark.e2e

SECTIONS = {"办理条件": "因工程建设需要挖掘城市道路的单位。", "所需材料": "- 挖掘申请表。\n- 施工方案和交通疏导方案。",
            "办理流程": "1. 提交申请。\n2. 审核。\n3. 发证。", "办理地点": "{{local.address}}",
            "办理时限": "五个工作日。", "收费标准": "不收费。", "咨询方式": "拨打12345热线。"}
GUIDE = {"title": "城市道路挖掘许可", "department": "城市管理局", "aliases": ["挖路审批", "道路开挖"],
         "source": "《城市道路管理条例》", "sections": SECTIONS}


def answer_within(running: Running, question: str, wanted: str, seconds: float = 60) -> tuple[str, float]:
    """The assistant's answer once it holds ``wanted`` (each try a new citizen), and how long it took."""
    started = time.monotonic()
    while True:
        answer = joined(running.say("guide-" + uuid.uuid4().hex[:10], question))
        if wanted in answer or time.monotonic() - started > seconds:
            return answer, time.monotonic() - started
        time.sleep(0.5)


def test_a_guide_published_through_the_open_api_is_answered_without_a_restart(running: Running) -> None:
    question = "挖路审批要带什么材料"
    before = joined(running.say("guide-" + uuid.uuid4().hex[:10], question))
    assert "交通疏导方案" not in before
    _, key = ApiKeys(running.services.sessions).create(department="城市管理局", name="e2e guides",
                                                       scopes=("guides:write",), rate_per_minute=60)
    url = f"http://127.0.0.1:{running.settings.services_api_port}/api/v1/guides/road-excavation-permit"

    def put(body: dict[str, object]) -> int:
        return running.http.put(url, json=body, headers={"Authorization": f"Bearer {key}",
                                                         "Idempotency-Key": uuid.uuid4().hex}).status_code
    assert put(GUIDE) == 201
    answer, _ = answer_within(running, question, "交通疏导方案")
    assert "交通疏导方案" in answer and "挖掘申请表" in answer, answer
    changed = {**GUIDE, "sections": {**SECTIONS, "所需材料": "- 挖掘申请表。\n- 占道施工安全承诺书。"}}
    assert put(changed) == 200
    answer, _ = answer_within(running, question, "安全承诺书")
    assert "安全承诺书" in answer and "交通疏导方案" not in answer, answer
