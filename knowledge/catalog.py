"""Import an official service catalogue (事项清单, CSV or JSON) into guide Markdown files.

Columns (first name found wins; Chinese catalogue headers and the English names both work):

| guide field | accepted column names |
|---|---|
| slug (required unless 事项编码 is given: then ``item-<code>``) | slug, 标识 |
| title (required) | title, 事项名称 |
| department (required) | department, 实施主体, 实施机构 |
| aliases (separated by 、 ， , ; ；) | aliases, 别名, 常用名称 |
| updated (default: today) | updated, 更新时间 |
| source (default: the file name) | source, 设定依据 |
| 办理条件 | 办理条件, 受理条件, 申请条件 |
| 所需材料 | 所需材料, 申请材料 |
| 办理流程 | 办理流程, 办事流程 |
| 办理地点 | 办理地点, 受理地点 |
| 办理时限 | 办理时限, 承诺办结时限, 承诺时限, 法定时限 |
| 收费标准 | 收费标准, 是否收费 |
| 咨询方式 | 咨询方式, 咨询电话 |

An empty section reads 以当地政务服务中心公布为准. A JSON file is a list of objects with these keys.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.content import SLUG, UNSET_LOCAL, ContentError, Topic, parse_topic, render_topic

COLUMNS: dict[str, tuple[str, ...]] = {
    "slug": ("slug", "标识"),
    "code": ("事项编码", "基本编码", "code"),
    "title": ("title", "事项名称"),
    "department": ("department", "实施主体", "实施机构"),
    "aliases": ("aliases", "别名", "常用名称"),
    "updated": ("updated", "更新时间"),
    "source": ("source", "设定依据"),
    "办理条件": ("办理条件", "受理条件", "申请条件"),
    "所需材料": ("所需材料", "申请材料"),
    "办理流程": ("办理流程", "办事流程"),
    "办理地点": ("办理地点", "受理地点"),
    "办理时限": ("办理时限", "承诺办结时限", "承诺时限", "法定时限"),
    "收费标准": ("收费标准", "是否收费"),
    "咨询方式": ("咨询方式", "咨询电话"),
}
SECTION_FIELDS = ("办理条件", "所需材料", "办理流程", "办理地点", "办理时限", "收费标准", "咨询方式")


@dataclass
class ImportReport:
    topics: list[Topic] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unset_sections: int = 0


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV (UTF-8, with or without BOM, or GB18030) or JSON catalogue."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ContentError(f"{path}: not JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("items") or data.get("data") or []
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ContentError(f"{path}: JSON must be a list of objects (or {{'items': [...]}})")
        return data
    if path.suffix.lower() != ".csv":
        raise ContentError(f"{path}: only .csv and .json catalogues are read")
    return list(csv.DictReader(io.StringIO(text)))


def _get(row: dict[str, Any], name: str) -> str:
    for column in COLUMNS[name]:
        value = row.get(column)
        if value is not None and str(value).strip():
            return str(value).strip()
    return ""


def row_to_topic(row: dict[str, Any], origin: str) -> tuple[Topic, int]:
    """One topic from a row, and how many of its sections were empty. Raises ContentError."""
    slug = _get(row, "slug").lower()
    if not slug and _get(row, "code"):
        slug = "item-" + re.sub(r"[^0-9a-z]+", "-", _get(row, "code").lower()).strip("-")
    if not slug:
        raise ContentError(f"{origin}: no slug (column 'slug', or 事项编码 to derive one)")
    if not SLUG.match(slug):
        raise ContentError(f"{origin}: slug '{slug}' must be lower-case words joined by '-'")
    for required in ("title", "department"):
        if not _get(row, required):
            raise ContentError(f"{origin}: no {required} (columns: {', '.join(COLUMNS[required])})")
    sections = {name: _get(row, name) or UNSET_LOCAL for name in SECTION_FIELDS}
    unset = sum(1 for name in SECTION_FIELDS if not _get(row, name))
    aliases = tuple(a.strip() for a in re.split(r"[、，,;；]", _get(row, "aliases")) if a.strip())
    topic = Topic(
        slug=slug, title=_get(row, "title"), department=_get(row, "department"), aliases=aliases,
        updated=_get(row, "updated") or dt.date.today().isoformat(), source=_get(row, "source") or origin,
        sections=sections,
    )
    return parse_topic(render_topic(topic), origin), unset  # the same checks as a hand-written file


def import_catalogue(path: Path) -> ImportReport:
    """Every usable row of a catalogue; a bad row is reported by its number and skipped."""
    report = ImportReport()
    seen: set[str] = set()
    for number, row in enumerate(read_rows(path), start=1):
        origin = f"{path.name} row {number}"
        try:
            topic, unset = row_to_topic(row, origin)
        except ContentError as exc:
            report.errors.append(str(exc))
            continue
        if topic.slug in seen:
            report.errors.append(f"{origin}: slug '{topic.slug}' appears twice; the first row is kept")
            continue
        seen.add(topic.slug)
        report.topics.append(topic)
        report.unset_sections += unset
    return report


def write_topics(topics: list[Topic], content_dir: Path) -> list[Path]:
    content_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for topic in topics:
        path = content_dir / f"{topic.slug}.md"
        path.write_text(render_topic(topic), encoding="utf-8")
        written.append(path)
    return written
