"""Feedback tickets (意见反馈): routing to a department, short numeric ticket numbers, status."""
from __future__ import annotations

import datetime as dt
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.models import FeedbackTicket
from textnorm.keywords import first_match

CATEGORIES: dict[str, str] = {"complaint": "投诉", "report": "举报", "suggestion": "建议", "help": "求助"}
# Days to answer, by category (help is urgent, suggestions are studied).
DUE_DAYS: dict[str, int] = {"complaint": 10, "report": 10, "suggestion": 15, "help": 3}
STATUS_NAMES: dict[str, str] = {
    "received": "已受理，等待分派",
    "assigned": "已转交承办部门",
    "in_progress": "正在处理",
    "resolved": "已办结",
    "closed": "已关闭",
}
FALLBACK_DEPARTMENT = "12345热线综合受理"
# state -> states a department may move a ticket to through the open API (services/open_api.py): a
# closed ticket is final, a resolved one may be reopened. Staff in the console may set any status.
TRANSITIONS: dict[str, frozenset[str]] = {
    "received": frozenset({"assigned", "in_progress", "resolved", "closed"}),
    "assigned": frozenset({"in_progress", "resolved", "closed"}),
    "in_progress": frozenset({"resolved", "closed"}),
    "resolved": frozenset({"in_progress", "closed"}),
    "closed": frozenset(),
}

# Department -> words in the content that send a ticket there. First match in this order wins.
ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("公安", ("诈骗", "偷", "盗", "打架", "斗殴", "走丢", "失踪", "赌博", "吸毒", "报警", "身份证", "户口")),
    ("生态环境", ("排污", "污染", "黑烟", "臭", "死鱼", "噪音", "噪声", "烧秸秆", "废水", "废气", "粉尘")),
    ("城管", ("垃圾", "占道", "摆摊", "路灯", "井盖", "违建", "违章建筑", "广场舞", "绿化", "乱贴", "渣土")),
    ("住建", ("物业", "装修", "暖气", "供暖", "小区", "楼", "房子", "施工", "工地", "下水道")),
    ("交通", ("公交", "红绿灯", "信号灯", "坑", "路面", "出租车", "客车", "道路", "桥")),
    ("市场监管", ("假货", "过期", "价格", "超市", "饭店", "食品", "缺斤短两", "商家", "药店")),
    ("卫健", ("医院", "医生", "看病", "诊所", "疫苗", "卫生院")),
    ("教育", ("学校", "老师", "学生", "补课", "幼儿园", "学费")),
    ("人社", ("工资", "工钱", "欠薪", "社保", "劳动", "招聘", "失业")),
    ("民政", ("低保", "养老院", "残疾", "救助", "婚姻", "殡葬", "孤儿", "老人")),
    ("水务", ("停水", "自来水", "水管", "漏水", "水质")),
)


# Tickets name departments by these short names; guides and API keys by the full ones.
DEPARTMENT_NAMES: dict[str, str] = {
    "公安": "公安局", "生态环境": "生态环境局", "城管": "城市管理局", "住建": "住房和城乡建设局",
    "交通": "交通运输局", "市场监管": "市场监督管理局", "卫健": "卫生健康委员会", "教育": "教育局",
    "人社": "人力资源和社会保障局", "民政": "民政局", "水务": "水务局", FALLBACK_DEPARTMENT: "12345政务服务便民热线",
}
_SHORT_NAMES = {full: short for short, full in DEPARTMENT_NAMES.items()}


def ticket_department(department: str) -> str:
    """The name tickets use for a department given by its full or its short name."""
    return _SHORT_NAMES.get(department, department)


def route(content: str) -> str:
    """The department a ticket with this content goes to."""
    return first_match(content, ROUTES) or FALLBACK_DEPARTMENT


@dataclass(frozen=True)
class TicketView:
    number: str
    category: str
    department: str
    status: str
    due_date: dt.date
    created_at: dt.datetime
    reply: str | None

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, self.status)


class TicketsBackend(Protocol):
    def create(
        self, *, category: str, content: str, location: str, contact_phone: str | None, channel: str, sender_id: str
    ) -> TicketView: ...

    def by_number(self, number: str) -> TicketView | None: ...


def _view(t: FeedbackTicket) -> TicketView:
    return TicketView(t.number, t.category, t.department, t.status, t.due_date, t.created_at, t.reply)


class SqlTickets:
    """Tickets in SQL. Numbers are 8 random digits (easy to read out), never starting with 0."""

    def __init__(
        self,
        sessions: sessionmaker,
        rng: random.Random | None = None,
        today: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        self._sessions = sessions
        self._rng = rng or secrets.SystemRandom()
        self._today = today

    def _number(self) -> str:
        return str(self._rng.randint(10_000_000, 99_999_999))

    def create(
        self, *, category: str, content: str, location: str, contact_phone: str | None, channel: str, sender_id: str
    ) -> TicketView:
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}")
        department = route(content + " " + location)
        due = self._today() + dt.timedelta(days=DUE_DAYS[category])
        for _ in range(10):
            with self._sessions() as s:
                t = FeedbackTicket(
                    number=self._number(),
                    category=category,
                    content=content,
                    location=location,
                    contact_phone=contact_phone,
                    department=department,
                    status="received",
                    due_date=due,
                    channel=channel,
                    sender_id=sender_id,
                )
                s.add(t)
                try:
                    s.commit()
                except IntegrityError:
                    s.rollback()  # number taken: draw another
                    continue
                return _view(t)
        raise RuntimeError("could not draw a free ticket number")

    def by_number(self, number: str) -> TicketView | None:
        with self._sessions() as s:
            t = s.scalar(select(FeedbackTicket).where(FeedbackTicket.number == number))
            return _view(t) if t else None
