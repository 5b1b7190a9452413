"""Who may do what. With a teacher code set, the session that has entered it may stop or cancel
any run, clear the queue, and pin or delete runs; everyone else watches, queues runs of their own,
and stops or cancels only those. Without a code (one person on a laptop) everyone may do everything.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Visitor:
    session: str  # this browser session's id: the owner of the runs it queues
    name: str  # shown in the queue; may be empty
    teacher: bool  # entered the teacher code, or no code is set
    code_set: bool


def visitor(session: str, name: str, entered_code: str, teacher_code: Optional[str]) -> Visitor:
    code_set = bool(teacher_code)
    # compare_digest: how long a wrong guess takes says nothing about the code
    is_teacher = not code_set or hmac.compare_digest(entered_code.encode(), str(teacher_code).encode())
    return Visitor(session, name.strip()[:40], is_teacher, code_set)


def run_refusal(who: Visitor, action: str, run_owner: str) -> Optional[str]:
    """None if `who` may `action` (stop, cancel) the run `run_owner` started; else why not, in one line."""
    if who.teacher or run_owner == who.session:
        return None
    return f"Only the teacher or whoever started this run can {action} it."


def teacher_refusal(who: Visitor, action: str) -> Optional[str]:
    """None if `who` may do a teacher's action (clear the queue, pin or delete runs); else why not."""
    return None if who.teacher else f"Only the teacher can {action}: enter the teacher code in the sidebar."


def display_name(name: str, teacher: bool = False) -> str:
    return name or ("the teacher" if teacher else "a visitor")
