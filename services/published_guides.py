"""Service guides departments publish through the open API (``PUT /api/v1/guides/{slug}``).

A guide is written as ``<KB_PUBLISHED_DIR>/<slug>.md`` in the format of knowledge/content/ and read
back by the same parser before it is written (temporary file, then rename), so a file the
knowledge loader would refuse never lands there: one bad file would stop every process that loads
the guides. ``knowledge.content.load_topics`` reads the directory after the built-in guides; its
files are part of the index fingerprint, so ``python -m knowledge build --if-stale`` rebuilds.
A slug is a department's own: a published guide or a built-in one (knowledge/content/) of another
department keeps it (``SlugTaken``); the department of a built-in guide may publish over it."""
from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from knowledge.config import KnowledgeSettings
from knowledge.content import ContentError, LocalDetails, Topic, parse_topic, render_topic
from knowledge.text import SECTIONS


class GuideInvalid(ValueError):
    """The guide would not read back as written (a ``## `` heading inside a section, an unknown
    ``{{local.…}}`` placeholder); the message names the part, never echoes the text."""


class SlugTaken(Exception):
    """The slug is another department's guide (built-in or published)."""


@dataclass(frozen=True)
class Published:
    topic: Topic
    created: bool  # no published guide had this slug before
    replaces_builtin: bool


def guide_topic(*, slug: str, title: str, department: str, aliases: list[str], source: str,
                sections: dict[str, str], updated: dt.date) -> Topic:
    """The topic a request describes, checked by writing and reading it back."""
    topic = Topic(slug=slug, title=title, department=department, aliases=tuple(aliases),
                  updated=updated.isoformat(), source=source, sections={name: sections[name] for name in SECTIONS})
    try:
        parsed = parse_topic(render_topic(topic), f"guide {slug}")
        LocalDetails().fill(parsed)  # refuses an unknown {{local.…}} placeholder
    except ContentError as exc:
        raise GuideInvalid(str(exc).split(": ", 1)[-1]) from None
    for name in SECTIONS:
        if parsed.sections.get(name) != topic.sections[name]:
            raise GuideInvalid(f"section {name} does not read back as sent (a line starting with '## '?)")
    if parsed != topic:
        raise GuideInvalid("the guide's front matter does not read back as sent")
    return topic


class PublishedGuides:
    """The published-guides directory of these knowledge settings. Writes in one process are
    serialised; the rename makes each file whole for every reader."""

    def __init__(self, settings: KnowledgeSettings) -> None:
        self.directory = settings.resolve(settings.published_dir)
        self._content_dir = settings.resolve(settings.content_dir)
        self._builtin: dict[str, str] | None = None
        self._lock = threading.Lock()

    def builtin_department(self, slug: str) -> str | None:
        """The department of the built-in guide with this slug, if there is one."""
        if self._builtin is None:
            found = {}
            for path in sorted(self._content_dir.glob("*.md")):
                topic = parse_topic(path.read_text(encoding="utf-8"), str(path))
                found[topic.slug] = topic.department
            self._builtin = found
        return self._builtin.get(slug)

    def current(self, slug: str) -> Topic | None:
        path = self.directory / f"{slug}.md"
        return parse_topic(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else None

    def publish(self, topic: Topic) -> Published:
        """Write the guide (made by ``guide_topic``) for its department; ``SlugTaken`` when the
        slug is another department's."""
        builtin = self.builtin_department(topic.slug)
        if builtin is not None and builtin != topic.department:
            raise SlugTaken(topic.slug)
        with self._lock:
            existing = self.current(topic.slug)
            if existing is not None and existing.department != topic.department:
                raise SlugTaken(topic.slug)
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.directory / f"{topic.slug}.md", render_topic(topic))
        return Published(topic, created=existing is None, replaces_builtin=builtin is not None)


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary name in the same directory (not ``*.md``, so no loader reads it
    half-written), flush it to disk, then rename it over the file."""
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
