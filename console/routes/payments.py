"""Payments: the daily reconciliation runs and their mismatches (read-only; supervisors and admins)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from console.auth import Staff
from console.web import page, role, rows_of, small_number
from services.billing import format_yuan
from services.models import ReconciliationMismatch, ReconciliationRun
from services.reconcile import KINDS, STATUSES

router = APIRouter()
RUNS_SHOWN = 30
MISMATCHES_SHOWN = 500


@router.get("/payments/reconciliation")
async def reconciliation(request: Request, who: Staff = Depends(role("supervisor")), run: str = "") -> HTMLResponse:
    runs = await rows_of(request, select(ReconciliationRun).order_by(ReconciliationRun.bill_date.desc(),
                                                                     ReconciliationRun.id.desc()).limit(RUNS_SHOWN))
    chosen = small_number(run, "run", 2**31) if run else (runs[0].id if runs else None)
    mismatches = [] if chosen is None else await rows_of(
        request, select(ReconciliationMismatch).where(ReconciliationMismatch.run_id == chosen)
        .order_by(ReconciliationMismatch.kind, ReconciliationMismatch.order_no).limit(MISMATCHES_SHOWN))
    shown = next((r for r in runs if r.id == chosen), None)
    return page(request, "reconciliation.html", who, runs=runs, chosen=chosen, shown=shown, mismatches=mismatches,
                kinds=KINDS, statuses=STATUSES, yuan=lambda fen: "" if fen is None else format_yuan(fen),
                limit=MISMATCHES_SHOWN)
