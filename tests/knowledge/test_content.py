import re
from pathlib import Path

import pytest

from knowledge.catalog import import_catalogue, write_topics
from knowledge.content import UNSET_LOCAL, ContentError, LocalDetails, load_topics, parse_topic, render_topic, section_html
from knowledge.text import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
CONTENT = ROOT / "knowledge" / "content"
REQUIRED = """id-card-apply id-card-temporary household-registration-transfer newborn-household-registration
residence-permit marriage-registration social-security-card urban-rural-medical-insurance
medical-reimbursement-offsite urban-rural-pension-insurance pension-qualification-certification elderly-allowance
housing-provident-fund-withdrawal business-license real-estate-registration driver-license-renewal vehicle-violation
water-bill electricity-bill gas-bill disability-certificate minimum-living-allowance hotline-12345
service-center-hours rural-land-contract agricultural-subsidy unemployment-registration student-aid vaccination
passport""".split()
# National numbers that are the same everywhere; any other digits in a guide would be a made-up local detail.
NATIONAL_NUMBERS = {"110", "119", "120", "122", "12122", "12123", "12315", "12320", "12329", "12333", "12345",
                    "12367", "12393", "95598"}

GOOD = """---
slug: sample-guide
title: 示例事项
department: 示例局
aliases: [示例, 样例]
updated: 2026-11-01
source: 示例依据
---
""" + "\n".join(f"## {name}\n{name}的内容。\n" for name in SECTIONS)


def test_every_required_guide_is_there_with_all_sections() -> None:
    topics = {t.slug: t for t in load_topics(CONTENT, ROOT / "knowledge" / "local.yml")}
    assert set(REQUIRED) <= set(topics)
    for topic in topics.values():
        assert list(topic.sections) == list(SECTIONS), topic.slug
        assert topic.title and topic.department and topic.source and topic.updated and topic.aliases


def test_guides_invent_no_local_numbers_or_addresses() -> None:
    for path in CONTENT.glob("*.md"):
        body = path.read_text(encoding="utf-8").split("---", 2)[2]
        for number in re.findall(r"\d{3,}", body):
            assert number in NATIONAL_NUMBERS, f"{path.name}: {number} looks like a local detail"
    for topic in load_topics(CONTENT, ROOT / "knowledge" / "local.yml"):
        for text in topic.sections.values():
            assert "{{" not in text, topic.slug


def test_local_details_come_from_topic_then_department_then_centre(tmp_path: Path) -> None:
    topic = parse_topic(GOOD.replace("## 办理地点\n办理地点的内容。",
                                     "## 办理地点\n地址：{{local.address}}；电话：{{local.phone}}；时间：{{local.hours}}"))
    local = LocalDetails({"service_center": {"hours": "工作日"}, "departments": {"示例局": {"phone": "0530-0000"}},
                          "topics": {"sample-guide": {"address": "某路1号"}}})
    filled = local.fill(topic).sections["办理地点"]
    assert filled == "地址：某路1号；电话：0530-0000；时间：工作日"
    assert LocalDetails().fill(topic).sections["办理地点"] == f"地址：{UNSET_LOCAL}；电话：{UNSET_LOCAL}；时间：{UNSET_LOCAL}"
    with pytest.raises(ContentError, match="unknown placeholder"):
        LocalDetails().fill(parse_topic(GOOD.replace("办理地点的内容。", "{{local.secret}}")))


@pytest.mark.parametrize(("text", "message"), [
    ("no front matter", "no front matter"),
    (GOOD.replace("slug: sample-guide", "slug: Sample Guide"), "slug"),
    (GOOD.replace("title: 示例事项\n", ""), "lacks 'title'"),
    (GOOD.replace("## 收费标准", "## 费用"), "unknown section '费用'"),
    (GOOD.replace("## 咨询方式\n咨询方式的内容。", ""), "missing or empty sections: 咨询方式"),
    (GOOD.replace("aliases: [示例, 样例]", "aliases: 示例"), "aliases must be a list"),
    (GOOD.replace("source: 示例依据", "source: [unclosed"), "not YAML"),
])
def test_bad_guides_are_refused_with_the_file_and_reason(text: str, message: str) -> None:
    with pytest.raises(ContentError, match=message) as err:
        parse_topic(text, "bad.md")
    assert "bad.md" in str(err.value)


def test_duplicate_slugs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.md").write_text(GOOD, encoding="utf-8")
    with pytest.raises(ContentError, match="already used"):
        load_topics(tmp_path)
    with pytest.raises(ContentError, match="no guides"):
        load_topics(tmp_path / "empty")


def test_render_and_parse_are_inverse() -> None:
    topic = parse_topic(GOOD)
    assert parse_topic(render_topic(topic)) == topic


def test_section_html_escapes_and_keeps_lists() -> None:
    html = section_html("前言<b>\n- 一\n- 二\n1. 第一步\n2. 第二步\n**注意**")
    assert html == ("<p>前言&lt;b&gt;</p><ul><li>一</li><li>二</li></ul><ol><li>第一步</li><li>第二步</li></ol>"
                    "<p><b>注意</b></p>")


CSV = """事项名称,实施主体,slug,别名,受理条件,申请材料,办理流程,受理地点,承诺办结时限,收费标准,咨询电话,设定依据
老年优待证办理,民政局,senior-card,老年证、优待证,年满六十周岁,身份证,窗口申请,{{local.address}},即办,不收费,12345,示例办法
缺名字的事项,,bad-row,,,,,,,,,
,民政局,no-title,,,,,,,,,
重复的事项,民政局,senior-card,,,,,,,,,
"""


def test_import_a_catalogue_csv_keeps_good_rows_and_names_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_text(CSV, encoding="utf-8-sig")
    report = import_catalogue(path)
    assert [t.slug for t in report.topics] == ["senior-card"]
    assert len(report.errors) == 3 and "row 2" in report.errors[0] and "department" in report.errors[0]
    assert "appears twice" in report.errors[2]
    written = write_topics(report.topics, tmp_path / "content")
    (topic,) = load_topics(tmp_path / "content")
    assert written[0].name == "senior-card.md"
    assert topic.aliases == ("老年证", "优待证") and topic.sections["办理时限"] == "即办"
    assert topic.sections["办理地点"] == UNSET_LOCAL  # the placeholder is filled from local details


def test_import_json_and_gb18030_csv(tmp_path: Path) -> None:
    js = tmp_path / "c.json"
    js.write_text('{"items": [{"title": "事项", "department": "局", "事项编码": "3717-AB-01", "所需材料": "身份证"}]}',
                  encoding="utf-8")
    report = import_catalogue(js)
    assert report.topics[0].slug == "item-3717-ab-01" and report.unset_sections == 6
    gb = tmp_path / "c.csv"
    gb.write_bytes("事项名称,实施主体,slug\n事项,局,gb-item\n".encode("gb18030"))
    assert import_catalogue(gb).topics[0].title == "事项"
    with pytest.raises(ContentError, match="list of objects"):
        (tmp_path / "x.json").write_text('"text"', encoding="utf-8")
        import_catalogue(tmp_path / "x.json")
    with pytest.raises(ContentError, match="only .csv and .json"):
        (tmp_path / "x.xlsx").write_bytes(b"PK")
        import_catalogue(tmp_path / "x.xlsx")


def test_the_nlu_lookup_of_service_words_matches_the_guides() -> None:
    from knowledge.nlu import lookup_yaml

    current = (ROOT / "nlu_data" / "service_words.yml").read_text(encoding="utf-8")
    assert current == lookup_yaml(load_topics(CONTENT)), "run: python -m knowledge nlu-lookup"
