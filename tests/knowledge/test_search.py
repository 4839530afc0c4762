import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from knowledge.answer import answer, pick, spoken
from knowledge.config import KnowledgeSettings
from knowledge.embed import load_encoder
from knowledge.evaluate import evaluate, read_pairs
from knowledge.index import KnowledgeBase, is_current, open_knowledge_base
from knowledge.text import Tokenizer, aspect_of

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "knowledge" / "eval"


def test_tokens_drop_fillers_and_keep_service_words() -> None:
    tokens = Tokenizer(["临时身份证"]).tokens("俺想问问，临时身份证咋办啊？")
    assert "临时身份证" in tokens and "身份证" in tokens
    assert not {"俺", "想", "问问", "咋", "啊", "？"} & set(tokens)
    assert "12345" in Tokenizer().tokens("幺二三四五热线")  # spoken digits, as a speech recogniser writes them


@pytest.mark.parametrize(("question", "section"), [
    ("办身份证要带啥", "所需材料"), ("在哪办", "办理地点"), ("要多少钱", "收费标准"), ("几天能拿到", "办理时限"),
    ("电话是多少", "咨询方式"), ("有什么条件", "办理条件"), ("怎么申请", "办理流程"), ("身份证", None),
    # Two cues: the one that asks wins, not the first of the table.
    ("领证当天能拿到不", "办理时限"), ("要交钱不", "收费标准"), ("补办要带啥手续", "所需材料"),
    ("办营业执照的手续费", "收费标准"), ("俺娘七十九了能领不", "办理条件"), ("找谁问问", "咨询方式"),
    ("户口从外县迁过来咋弄", "办理流程"), ("几点开门", "办理地点"), ("俺在外地上班 能在老家交不", "办理条件"),
])
def test_aspect_of_a_question(question: str, section: str | None) -> None:
    assert aspect_of(question) == section


def test_every_required_guide_is_found_in_the_top_three(knowledge: KnowledgeBase) -> None:
    pairs = read_pairs(EVAL / "dev.tsv") + read_pairs(EVAL / "test.tsv")
    by_slug: dict[str, list[bool]] = {}
    for pair in pairs:
        found = [h.slug for h in knowledge.search(pair.question, k=3, mode="bm25")]
        by_slug.setdefault(pair.slug, []).append(pair.slug in found)
    assert set(by_slug) == set(knowledge.topics)
    missed = {slug: hits for slug, hits in by_slug.items() if not any(hits)}
    assert not missed, f"guides never in the top 3: {missed}"


def test_bm25_meets_the_goal_on_the_test_split(knowledge: KnowledgeBase) -> None:
    result = evaluate(knowledge, read_pairs(EVAL / "test.tsv"), "bm25")
    assert result["questions"] >= 75
    assert result["top1"] >= 0.85 and result["top3"] >= 0.95


def test_eval_files_are_large_enough_and_not_overlapping() -> None:
    dev, test = read_pairs(EVAL / "dev.tsv"), read_pairs(EVAL / "test.tsv")
    assert len(dev) + len(test) >= 150
    assert not {p.question for p in dev} & {p.question for p in test}


def test_search_names_topic_and_section(knowledge: KnowledgeBase) -> None:
    hits = knowledge.search("办身份证要带什么", k=3, mode="bm25")
    assert (hits[0].slug, hits[0].section) == ("id-card-apply", "所需材料")
    assert len({h.slug for h in hits}) == 3  # one section per guide
    assert hits[0].as_json().keys() == {"slug", "title", "section", "score"}
    assert knowledge.search("", mode="bm25") == [] and knowledge.search("？？", mode="bm25") == []
    sections = knowledge.search("身份证", k=5, mode="bm25", per_topic=False)
    assert len(sections) == 5 and [h.slug for h in sections].count("id-card-apply") > 1


def test_answer_strong_weak_none_and_follow_up(knowledge: KnowledgeBase) -> None:
    strong = answer(knowledge, "护照多少钱", mode="bm25")
    assert strong.kind == "answer" and strong.hit and (strong.hit.slug, strong.hit.section) == ("passport", "收费标准")
    assert answer(knowledge, "我想问问补贴的事", mode="bm25").kind == "choices"
    weak = answer(knowledge, "补贴", mode="bm25")
    assert weak.kind == "choices" and len(weak.choices) == 3
    assert {"agricultural-subsidy", "elderly-allowance"} <= {h.slug for h in weak.choices}
    assert answer(knowledge, "今天天气怎么样", mode="bm25").kind == "none"
    assert answer(knowledge, "给我讲个笑话", mode="bm25").kind == "none"
    follow = answer(knowledge, "在哪办", context_slug="passport", mode="bm25")
    assert follow.followup and follow.hit and (follow.hit.slug, follow.hit.section) == ("passport", "办理地点")
    # A question that names a new topic leaves the old one.
    moved = answer(knowledge, "低保要什么材料", context_slug="passport", mode="bm25")
    assert moved.hit and moved.hit.slug == "minimum-living-allowance" and not moved.followup
    assert answer(knowledge, "在哪办", mode="bm25").kind == "none"  # no topic yet: nothing to follow


@pytest.mark.parametrize(("reply", "slug"), [
    ("1", "a"), ("第二个", "b"), ("选3", "c"), ("三", "c"), ("两", "b"), ("第4个", None), ("不知道", None)])
def test_pick_a_numbered_choice(reply: str, slug: str | None) -> None:
    assert pick(["a", "b", "c"], reply) == slug


def test_spoken_answers_are_at_most_three_short_sentences(knowledge: KnowledgeBase) -> None:
    for topic in knowledge.topics.values():
        for text in topic.sections.values():
            lines = spoken(text)
            assert 1 <= len(lines) <= 3
            assert all(len(line) <= 41 and "**" not in line and not line.startswith("-") for line in lines)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "knowledge", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_cli_build_search_eval_and_staleness(tmp_path: Path) -> None:
    local = tmp_path / "local.yml"
    local.write_text("service_center: {hours: ''}\n", encoding="utf-8")
    env = {"KB_INDEX_DIR": str(tmp_path / "kb"), "KB_EMBEDDING_MODEL": "", "KB_LOCAL_FILE": str(local),
           "HF_HUB_OFFLINE": "1"}
    built = _cli("build", env=env)
    assert built.returncode == 0, built.stderr
    assert "30 guides, 210 sections" in built.stdout and "BM25 and pinyin only" in built.stdout
    assert "no embedding model" in built.stderr  # said once, in the log
    assert "current" in _cli("build", "--if-stale", env=env).stdout
    local.write_text("service_center: {hours: '工作日 9:00-17:00'}\n", encoding="utf-8")
    assert "current" not in _cli("build", "--if-stale", env=env).stdout  # local details changed: rebuilt
    out = _cli("search", "办身份证要带什么", "--json", "-k", "3", env=env)
    hits = json.loads(out.stdout)
    assert len(hits) == 3 and hits[0]["slug"] == "id-card-apply" and hits[0]["section"] == "所需材料"
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    place = json.loads(_cli("search", "政务服务中心几点上班", "--json", "-k", "1", env=env).stdout)
    assert place[0]["slug"] == "service-center-hours"
    ev = _cli("eval", str(EVAL / "test.tsv"), env=env)  # no model: the default hybrid runs on BM25
    assert ev.returncode == 0 and "top-1" in ev.stdout and "top-3" in ev.stdout and "MRR" in ev.stdout
    assert "BM25 and pinyin alone" in ev.stderr
    sections = _cli("eval", str(EVAL / "sections-test.tsv"), "--mode", "lexical", env=env)
    assert sections.returncode == 0 and "section" in sections.stdout and "guide and section" in sections.stdout
    bad = tmp_path / "bad.tsv"
    bad.write_text("只有问题没有答案\n", encoding="utf-8")
    refused = _cli("eval", str(bad), env=env)
    assert refused.returncode == 2 and "question<TAB>slug" in refused.stderr
    missing = _cli("eval", str(tmp_path / "nope.tsv"), env=env)
    assert missing.returncode == 2 and "error:" in missing.stderr


def test_cli_import_writes_guides_and_exits_1_on_rejected_rows(tmp_path: Path) -> None:
    catalogue = tmp_path / "c.csv"
    catalogue.write_text("事项名称,实施主体,slug\n老年证,民政局,senior-card\n,民政局,no-title\n", encoding="utf-8")
    result = _cli("import", str(catalogue), "--out", str(tmp_path / "content"), env={})
    assert result.returncode == 1 and "row 2" in result.stderr and "1 guides written" in result.stdout
    assert (tmp_path / "content" / "senior-card.md").exists()


def test_no_model_means_bm25_and_one_warning(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        assert load_encoder(str(tmp_path / "no-such-model")) is None
    assert sum("BM25 and pinyin alone" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(RuntimeError, match="embedding model"):
        KnowledgeBase(list(open_knowledge_base(KnowledgeSettings(
            embedding_model="", index_dir=tmp_path / "kb")).topics.values())).build().section_scores("护照", "dense")


def test_dense_search_through_sentence_transformers(packaged_model_dir: Path, tmp_path: Path) -> None:
    """The real loading path: a sentence-transformers directory, offline, saved and loaded back."""
    settings = KnowledgeSettings(embedding_model=str(packaged_model_dir), index_dir=tmp_path / "kb")
    kb = open_knowledge_base(settings)
    assert kb.encoder is not None and kb.dense is not None and kb.dense.shape == (len(kb.sections), 384)
    assert (tmp_path / "kb" / "dense.npy").exists()
    for mode in ("dense", "hybrid"):
        hits = kb.search("办护照要多少钱", k=3, mode=mode)  # type: ignore[arg-type]
        assert len(hits) == 3 and hits[0].score > 0
    assert kb.search("办护照要多少钱", k=1, mode="hybrid")[0].slug == "passport"
    again = open_knowledge_base(settings)  # loads the saved index: same vectors, no rebuild
    assert again.dense is not None and (again.dense == kb.dense).all()
    other = KnowledgeSettings(embedding_model="", index_dir=tmp_path / "kb")
    from knowledge.index import fingerprint
    assert not is_current(tmp_path / "kb", fingerprint(other, None))  # a model change makes it stale
