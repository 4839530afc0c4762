"""Guides as Markdown: front matter + one ``## <section>`` per section; local details from local.yml."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from knowledge.text import OVERVIEW, SECTIONS

UNSET_LOCAL = "以当地政务服务中心公布为准"
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_PLACEHOLDER = re.compile(r"\{\{\s*local\.(\w+)\s*\}\}")
LOCAL_FIELDS = ("name", "address", "hours", "phone", "website")
# Said after a guide's overview, so the citizen knows what else to ask (one short sentence).
OFFER_SECTIONS = "可以接着问：条件、材料、流程、地点、时限、收费、电话。"
_FIRST_SENTENCE = re.compile(r"^.*?(?:[。！？；;]|$)", re.S)


class ContentError(ValueError):
    """A guide file that cannot be used, with the file named."""


@dataclass(frozen=True)
class Section:
    slug: str
    title: str
    name: str
    text: str


@dataclass(frozen=True)
class Topic:
    slug: str
    title: str
    department: str
    aliases: tuple[str, ...]
    updated: str
    source: str
    sections: dict[str, str] = field(default_factory=dict)

    def section(self, name: str) -> Section:
        """One section by name; ``概述`` (OVERVIEW) is the guide in short, made by ``overview``."""
        if name == OVERVIEW:
            return Section(self.slug, self.title, OVERVIEW, overview(self))
        return Section(self.slug, self.title, name, self.sections[name])

    def all_sections(self) -> list[Section]:
        return [self.section(name) for name in SECTIONS if name in self.sections]


def _first_sentence(text: str) -> str:
    """The first sentence or list item of a section, list marker and emphasis removed, ending in 。;
    a line that introduces a list ("有下列情形之一的，…：") keeps the list's first item."""
    lines = [re.sub(r"^\s*(?:[-*]|\d+[.、)])\s*", "", ln).replace("**", "").strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    m = _FIRST_SENTENCE.match(lines[0])
    sentence = (m.group(0) if m else lines[0]).strip()
    if sentence.endswith(("：", ":")) and len(lines) > 1:
        sentence += _FIRST_SENTENCE.match(lines[1]).group(0).strip()  # type: ignore[union-attr]
    sentence = sentence.rstrip("；;，,：:")
    return sentence if sentence.endswith(("。", "！", "？")) else sentence + "。"


def overview(topic: Topic) -> str:
    """The guide in short, for a question that names no aspect ("俺想办个护照"): who it is for
    (the first sentence of 办理条件), where to start (the first step of 办理流程), then the offer of
    the sections. Made from the guide itself, so it never says what the guide does not."""
    parts = [_first_sentence(topic.sections.get(name, "")) for name in ("办理条件", "办理流程")]
    return "".join(p for p in parts if p) + OFFER_SECTIONS


def parse_topic(text: str, origin: str = "<text>") -> Topic:
    """One guide from its Markdown text. Raises ContentError naming ``origin`` and the problem."""
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text.replace("\r\n", "\n"), re.S)
    if not m:
        raise ContentError(f"{origin}: no front matter (a '---' block at the top)")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        raise ContentError(f"{origin}: front matter is not YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise ContentError(f"{origin}: front matter must be a mapping")
    for key in ("slug", "title", "department", "updated", "source"):
        if not meta.get(key):
            raise ContentError(f"{origin}: front matter lacks '{key}'")
    slug = str(meta["slug"])
    if not SLUG.match(slug):
        raise ContentError(f"{origin}: slug '{slug}' must be lower-case words joined by '-'")
    aliases = meta.get("aliases") or []
    if not isinstance(aliases, list):
        raise ContentError(f"{origin}: aliases must be a list")
    updated = meta["updated"]
    sections: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in m.group(2).split("\n"):
        heading = re.match(r"^##\s+(.+?)\s*$", line)
        if heading:
            if current:
                sections[current] = "\n".join(lines).strip()
            current, lines = heading.group(1), []
            if current not in SECTIONS:
                raise ContentError(f"{origin}: unknown section '{current}' (allowed: {'、'.join(SECTIONS)})")
        elif current:
            lines.append(line)
    if current:
        sections[current] = "\n".join(lines).strip()
    missing = [s for s in SECTIONS if not sections.get(s)]
    if missing:
        raise ContentError(f"{origin}: missing or empty sections: {'、'.join(missing)}")
    return Topic(
        slug=slug, title=str(meta["title"]), department=str(meta["department"]),
        aliases=tuple(str(a) for a in aliases),
        updated=updated.isoformat() if isinstance(updated, dt.date) else str(updated),
        source=str(meta["source"]), sections=sections,
    )


def render_topic(topic: Topic) -> str:
    """The Markdown file text of a topic (the inverse of parse_topic)."""
    meta = {
        "slug": topic.slug, "title": topic.title, "department": topic.department,
        "aliases": list(topic.aliases), "updated": topic.updated, "source": topic.source,
    }
    head = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False, width=1000).strip()
    body = "\n\n".join(f"## {name}\n{topic.sections[name]}" for name in SECTIONS if name in topic.sections)
    return f"---\n{head}\n---\n\n{body}\n"


class LocalDetails:
    """Addresses, hours and phone numbers that operators fill in ``knowledge/local.yml``.

    A guide says ``{{local.address}}``; the value comes from the topic's entry, else its
    department's, else the service centre's, else it reads 以当地政务服务中心公布为准."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.center: dict[str, Any] = data.get("service_center") or {}
        self.departments: dict[str, Any] = data.get("departments") or {}
        self.topics: dict[str, Any] = data.get("topics") or {}

    @classmethod
    def load(cls, path: Path) -> "LocalDetails":
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ContentError(f"{path}: not YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ContentError(f"{path}: must be a mapping")
        return cls(data)

    def value(self, slug: str, department: str, name: str) -> str:
        for scope in (self.topics.get(slug), self.departments.get(department), self.center):
            if isinstance(scope, dict) and str(scope.get(name) or "").strip():
                return str(scope[name]).strip()
        return UNSET_LOCAL

    def fill(self, topic: Topic) -> Topic:
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in LOCAL_FIELDS:
                raise ContentError(f"{topic.slug}: unknown placeholder {{{{local.{m.group(1)}}}}}")
            return self.value(topic.slug, topic.department, m.group(1))

        filled = {name: _PLACEHOLDER.sub(sub, text) for name, text in topic.sections.items()}
        return Topic(topic.slug, topic.title, topic.department, topic.aliases, topic.updated, topic.source, filled)


def load_topics(content_dir: Path, local_file: Path | None = None, published_dir: Path | None = None) -> list[Topic]:
    """Every guide under ``content_dir``, local details filled in. Duplicate slugs are an error.
    Then the guides departments published (``published_dir``, may be missing): one with the slug
    of a built-in guide takes its place (the open API allows that only to the guide's department)."""
    local = LocalDetails.load(local_file) if local_file else LocalDetails()
    topics: list[Topic] = []
    seen: dict[str, Path] = {}
    for path in sorted(content_dir.glob("*.md")):
        topic = parse_topic(path.read_text(encoding="utf-8"), str(path))
        if topic.slug in seen:
            raise ContentError(f"{path}: slug '{topic.slug}' is already used by {seen[topic.slug]}")
        seen[topic.slug] = path
        topics.append(local.fill(topic))
    if not topics:
        raise ContentError(f"{content_dir}: no guides (*.md)")
    published = load_published(published_dir, local) if published_dir else []
    replaced = {t.slug for t in published}
    return [t for t in topics if t.slug not in replaced] + published


def load_published(published_dir: Path, local: LocalDetails | None = None) -> list[Topic]:
    """The guides departments published: ``<slug>.md`` files (a file named otherwise is an error)."""
    local = local or LocalDetails()
    topics = []
    for path in sorted(published_dir.glob("*.md")) if published_dir.is_dir() else []:
        topic = parse_topic(path.read_text(encoding="utf-8"), str(path))
        if path.name != f"{topic.slug}.md":
            raise ContentError(f"{path}: a published guide's file is named after its slug, {topic.slug}.md")
        topics.append(local.fill(topic))
    return topics


def section_html(text: str) -> str:
    """A section's Markdown subset (paragraphs, "- " and "1. " lists, **bold**) as escaped HTML."""
    from html import escape

    out: list[str] = []
    open_list: str | None = None
    for line in text.split("\n"):
        item = re.match(r"^\s*(-|\d+\.)\s+(.*)$", line)
        kind = ("ol" if item.group(1)[0].isdigit() else "ul") if item else None
        if open_list and kind != open_list:
            out.append(f"</{open_list}>")
            open_list = None
        body = escape(item.group(2) if item else line.strip())
        body = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", body)
        if kind:
            if open_list is None:
                out.append(f"<{kind}>")
                open_list = kind
            out.append(f"<li>{body}</li>")
        elif body:
            out.append(f"<p>{body}</p>")
    if open_list:
        out.append(f"</{open_list}>")
    return "".join(out)
