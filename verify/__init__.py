"""Checkers, verdicts, reports and the command line."""

from verify.jlr import rank
from verify.jlr.gen import check_jlr_gen
from verify.jlr.rank import *  # noqa: F403  (the rank-bound checkers of [JLR24])
from verify.jlr.second_order import check_jlr_gd, check_jlr_no_spurious, check_jlr_spurious_below
from verify.registry import CHECKERS, get_checker
from verify.report import REPORT_SCHEMA, build_report, write_report
from verify.run.audits import AuditResult, AuditTask, audit, plan_audit
from verify.run.points import PointAudit, audit_point, load_point
from verify.verdict import Verdict

__all__ = [
    "Verdict",
    "CHECKERS",
    "get_checker",
    *rank.__all__,
    "check_jlr_no_spurious",
    "check_jlr_spurious_below",
    "check_jlr_gd",
    "check_jlr_gen",
    "REPORT_SCHEMA",
    "build_report",
    "write_report",
    "audit",
    "plan_audit",
    "AuditResult",
    "AuditTask",
    "audit_point",
    "load_point",
    "PointAudit",
]
