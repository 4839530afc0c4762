"""The open API's request and response bodies, and its errors' codes (services/open_api.py).

Field lengths are the columns' (services/models.py); text may hold no control characters (line
breaks only in multi-line text), so nothing reaches the database that PostgreSQL would refuse."""
from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from knowledge.content import SLUG

LINE = r"^[^\x00-\x1f\x7f]*$"  # one line of text
LINES = r"^[^\x00-\x09\x0b-\x1f\x7f]*$"  # line breaks allowed
_SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode(text: str) -> str:
    if _SURROGATE.search(text):
        raise ValueError("text must be valid Unicode")
    return text


_Unicode = AfterValidator(_unicode)
Line20 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20, pattern=LINE), _Unicode]
Line30 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=30, pattern=LINE), _Unicode]
Line50 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50, pattern=LINE), _Unicode]
Line200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=LINE), _Unicode]
Alias = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20,
                                         pattern=r"^[^\s\x00-\x1f\x7f]+$"), _Unicode]
Reply = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000, pattern=LINES), _Unicode]
SectionText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=3000, pattern=LINES),
                        _Unicode]
TicketStatus = Literal["received", "assigned", "in_progress", "resolved", "closed"]  # STATUS_NAMES (a test checks)

APPLICATION_NUMBER = r"^[0-9]{1,20}$"
TICKET_NUMBER = r"^[1-9][0-9]{7}$"
GUIDE_SLUG = SLUG.pattern
IDEMPOTENCY_KEY = r"^[!-~]{1,64}$"  # printable ASCII, no spaces

# code -> (HTTP status, what it means); every error the API answers is one of these
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "the request is malformed: JSON, a field, a parameter or a header"),
    "idempotency_key_missing": (400, "writes need an Idempotency-Key header of 1-64 printable ASCII characters"),
    "unauthorized": (401, "the API key is missing, unknown or revoked"),
    "missing_scope": (403, "the API key lacks the scope this operation needs (named in the message)"),
    "other_department": (403, "the record or guide belongs to another department"),
    "not_found": (404, "no such record, or no such path"),
    "method_not_allowed": (405, "the path does not take this method"),
    "invalid_transition": (409, "the ticket's status cannot change this way (closed is final)"),
    "slug_taken": (409, "the slug is another department's guide (built-in or published)"),
    "progress_elsewhere": (409, "application progress is kept by the provincial platform, not here"),
    "body_too_large": (413, "the request body is over 64 KiB"),
    "idempotency_conflict": (422, "this Idempotency-Key was used with a different request in the last 24 hours"),
    "rate_limited": (429, "over the key's requests per minute; wait Retry-After seconds"),
    "internal_error": (500, "the server failed; nothing was changed"),
}


class ErrorDetail(BaseModel):
    code: str = Field(description="one of: " + ", ".join(ERRORS))
    message: str = Field(description="English, for the developer; never echoes the request")


class ErrorBody(BaseModel):
    error: ErrorDetail


class StepIn(BaseModel):
    """A progress step of an application (办件进度), and optionally where the application stands now."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"step": "材料审核", "result": "通过", "status": "审批中", "current_step": "县民政局审批"}]})

    step: Line50 = Field(description="the step's name, e.g. 材料审核")
    result: Line50 = Field(description="its result, e.g. 通过, 需补正：缺少照片")
    at: dt.datetime | None = Field(default=None, description="when, with its offset; default now. "
                                   "Not before 2000, not more than a day ahead")
    status: Line20 | None = Field(default=None, description="the application's status now, e.g. 审批中, 已办结")
    current_step: Line50 | None = Field(default=None, description="the application's current step; default `step`")
    expected_date: dt.date | None = Field(default=None, description="expected completion date; null clears it")


class StepOut(BaseModel):
    step: str
    result: str
    at: dt.datetime


class ApplicationOut(BaseModel):
    """An application's public view: no applicant's phone or ID-card number."""

    number: str
    service_name: str
    status: str
    current_step: str
    expected_date: dt.date | None
    office: str
    steps: list[StepOut]


class TicketPatch(BaseModel):
    """A new status (services/tickets.py TRANSITIONS), a reply the citizen will hear or read, or both."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1, "examples": [
        {"status": "resolved", "reply": "路灯已于今天修复，感谢您的反映。"}]})

    status: TicketStatus | None = None
    reply: Reply | None = Field(default=None, description="plain Chinese, up to 1000 characters")

    @model_validator(mode="after")
    def _something(self) -> "TicketPatch":
        if self.status is None and self.reply is None:
            raise ValueError("give a status, a reply, or both")
        return self


class TicketOut(BaseModel):
    number: str
    status: TicketStatus
    department: str
    due_date: dt.date
    updated_at: dt.datetime


class GuideSections(BaseModel):
    """The seven sections of a guide, as in knowledge/content/*.md: Markdown paragraphs, ``- `` and
    ``1. `` lists and ``**bold**``; ``{{local.address}}``, ``{{local.hours}}``, ``{{local.phone}}``,
    ``{{local.name}}``, ``{{local.website}}`` are filled from knowledge/local.yml. No ``## `` lines."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    conditions: SectionText = Field(alias="办理条件")
    materials: SectionText = Field(alias="所需材料")
    procedure: SectionText = Field(alias="办理流程")
    place: SectionText = Field(alias="办理地点")
    time_limit: SectionText = Field(alias="办理时限")
    fees: SectionText = Field(alias="收费标准")
    contact: SectionText = Field(alias="咨询方式")

    def by_name(self) -> dict[str, str]:
        return self.model_dump(by_alias=True)


class GuideIn(BaseModel):
    """A service guide (办事指南) of the calling department."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "title": "城市道路挖掘许可", "department": "城市管理局", "aliases": ["挖路审批", "道路开挖"],
        "source": "《城市道路管理条例》",
        "sections": {"办理条件": "因工程建设需要挖掘城市道路的单位。", "所需材料": "- 申请表。\n- 施工方案。",
                     "办理流程": "1. 提交申请。\n2. 审核。\n3. 发证。", "办理地点": "{{local.address}}",
                     "办理时限": "五个工作日。", "收费标准": "不收费。", "咨询方式": "拨打12345热线。"}}]})

    title: Line50
    department: Line30 = Field(description="must be the API key's department")
    aliases: list[Alias] = Field(default_factory=list, max_length=30, description="what citizens call it")
    source: Line200 = Field(description="the rules it rests on")
    sections: GuideSections


class GuideOut(BaseModel):
    slug: str
    title: str
    department: str
    updated: dt.date
    url: str = Field(description="the whole guide for citizens, /guide/<slug> on the services API")
    replaces_builtin: bool = Field(description="it takes the place of the built-in guide of this slug")


class Figure(BaseModel):
    value: float | None = Field(description="null when withheld or nothing to count")
    count: int | None = Field(description="records counted; null when withheld")
    reason: Literal["fewer_than_5_records", "not_recorded_by_department"] | None


class KpisOut(BaseModel):
    """Aggregates only; a figure from fewer than 5 records is withheld so no one can be singled out."""

    model_config = ConfigDict(populate_by_name=True)

    start: dt.date = Field(alias="from")
    end: dt.date = Field(alias="to")
    department: str | None
    min_group_size: int
    completion_rate: Figure = Field(description="事项办结率: applications submitted in the range that are 已办结")
    satisfaction: Figure = Field(description="群众满意度: the mean rating (1-5) given in the range; "
                                             "ratings carry no department")
    tickets_on_time_rate: Figure = Field(description="工单按期答复率: tickets due in the range (up to today) "
                                                     "answered (resolved or closed) by their due date")
