"""Sample data for the embedded default. Every person, number and address here is fictional:
phone numbers are in the 1380000xxxx test range and names are "测试用户"."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.models import Application, ApplicationStep, Bill, FeedbackTicket

# Fictional applicants: (phone, ID-card number with a valid check digit).
APPLICANT_A = ("13800000001", "371702198001011230")
APPLICANT_B = ("13800000002", "37172119650315002X")
APPLICANT_C = ("13800000003", "371722195007084563")


def _at(days: int, hour: int = 9) -> dt.datetime:
    d = dt.date.today() + dt.timedelta(days=days)
    return dt.datetime(d.year, d.month, d.day, hour, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def _application(s: Session, number: str, service: str, who: tuple[str, str], status: str, step: str,
                 expected_in: int | None, office: str, history: list[tuple[str, str, int]], department: str) -> None:
    app = Application(
        number=number, service_name=service, applicant_phone=who[0], applicant_id_last4=who[1][-4:],
        status=status, current_step=step, office=office, department=department, submitted_at=_at(history[0][2]),
        expected_date=None if expected_in is None else dt.date.today() + dt.timedelta(days=expected_in),
    )
    s.add(app)
    s.flush()
    for name, result, days in history:
        s.add(ApplicationStep(application_id=app.id, step=name, result=result, at=_at(days)))


def seed(sessions: sessionmaker) -> bool:
    """Insert the sample data into an empty database. Returns False when data was already there."""
    with sessions() as s:
        if s.scalar(select(func.count()).select_from(Application)):
            return False
        _application(s, "20261101000001", "个体工商户营业执照设立登记", APPLICANT_A, "审核中", "材料审核", 3,
                     "牡丹区政务服务中心 市场准入窗口",
                     [("网上申请", "已提交", -6), ("受理", "已受理", -5), ("材料审核", "审核中", -4)], "市场监督管理局")
        _application(s, "20261101000002", "不动产登记（二手房转移）", APPLICANT_A, "已办结", "已办结", None,
                     "菏泽市不动产登记中心",
                     [("受理", "已受理", -20), ("审核", "通过", -15), ("登簿", "完成", -12), ("发证", "已领取", -10)],
                     "自然资源和规划局")
        _application(s, "20261102000003", "社会保障卡申领", APPLICANT_B, "待补正", "补正材料", 7,
                     "曹县人社服务大厅",
                     [("受理", "已受理", -3), ("材料审核", "需补正：缺少近期免冠照片", -2)], "人力资源和社会保障局")
        _application(s, "20261028000115", "城乡居民最低生活保障申请", APPLICANT_C, "审批中", "县民政局审批", 10,
                     "单县民政局社会救助股",
                     [("村级申请", "已提交", -25), ("镇街审核", "通过", -12), ("入户调查", "完成", -10),
                      ("县民政局审批", "审批中", -5)], "民政局")
        period = (dt.date.today().replace(day=1) - dt.timedelta(days=1)).strftime("%Y年%m月")
        year = str(dt.date.today().year + 1) + "年度"
        due = dt.date.today() + dt.timedelta(days=15)
        s.add_all([
            Bill(bill_type="water", account="1000000001", holder_name="测试用户甲", district="牡丹区",
                 period=period, amount_fen=5630, due_date=due),
            Bill(bill_type="water", account="1000000002", holder_name="测试用户乙", district="曹县",
                 period=period, amount_fen=2810, due_date=due),
            Bill(bill_type="electricity", account="2000000001", holder_name="测试用户甲", district="牡丹区",
                 period=period, amount_fen=18845, due_date=due),
            Bill(bill_type="gas", account="3000000001", holder_name="测试用户丙", district="单县",
                 period=period, amount_fen=9900, due_date=due),
            Bill(bill_type="medical_insurance", account=APPLICANT_B[1], holder_name="测试用户乙", district="曹县",
                 period=year, amount_fen=40000, due_date=due),
            Bill(bill_type="pension_insurance", account=APPLICANT_C[1], holder_name="测试用户丙", district="单县",
                 period=year, amount_fen=20000, due_date=due),
        ])
        s.add(FeedbackTicket(
            number="10000001", category="complaint", content="测试：小区门口路灯不亮", location="牡丹区 测试路",
            contact_phone=APPLICANT_A[0], department="城管", status="in_progress",
            due_date=dt.date.today() + dt.timedelta(days=4), channel="rest", sender_id="seed",
        ))
        s.commit()
        return True
