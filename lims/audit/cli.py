"""``lims audit ...``: checking the audit trail from the server's command line."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session

from lims import db
from lims.audit.models import AuditEntry
from lims.audit.services import ChainReport, verify_chain


def describe_report(session: Session, report: ChainReport) -> str:
    """The verification result in words, naming the first broken row by position and id."""
    if report.intact:
        return f"Audit trail intact: {report.rows} rows checked."
    seq = report.first_broken_seq
    if seq is None:  # the chain head itself is missing
        return f"Audit trail broken: {report.problem} ({report.rows} rows checked)."
    entry_id = session.scalar(select(AuditEntry.id).where(AuditEntry.seq == seq))
    if entry_id is not None:
        where = f"row {seq} (id {entry_id})"
    else:
        # A removed row has no id; name the row after the gap, where the chain resumes.
        following = session.execute(
            select(AuditEntry.seq, AuditEntry.id)
            .where(AuditEntry.seq > seq)
            .order_by(AuditEntry.seq)
            .limit(1)
        ).first()
        where = f"row {seq} (no row at this position"
        where += f"; the next is row {following.seq}, id {following.id})" if following else ")"
    return f"Audit trail broken at {where}: {report.problem} ({report.rows} rows checked)."


@click.group("audit", help="The audit trail: append-only, hash-chained.")
def audit_group() -> None:
    pass


@audit_group.command(
    "verify", help="Recompute the hash chain; exit 1 naming the first row that breaks it."
)
@with_appcontext
def verify() -> None:
    session = db.session()
    report = verify_chain(session)  # reads the rows in batches, never all at once
    message = describe_report(session, report)
    if not report.intact:
        raise click.ClickException(message)
    click.echo(message)
