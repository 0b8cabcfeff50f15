"""A realistic demo network: the five Danish university hospitals and users of every role.

Loading is idempotent: sites and users that exist are kept (their passwords too, unless a
password is given, which every demo user then gets).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.auth import services
from lims.auth.models import Role, Site, User
from lims.db import replayed_time, utcnow

SITES = [
    # code, name, city, ISBT 128 FIN (invented for the demo; real ones come from ICCBBA)
    ("RH", "Rigshospitalet", "København", "D1001"),
    ("OUH", "Odense Universitetshospital", "Odense", "D2001"),
    ("AUH", "Aarhus Universitetshospital", "Aarhus", "D3001"),
    ("AAUH", "Aalborg Universitetshospital", "Aalborg", "D4001"),
    ("HGH", "Herlev og Gentofte Hospital", "Herlev", "D5001"),
]

USERS = [
    # username, full name, role, site
    ("admin", "Mette Kjær", Role.ADMIN, "RH"),
    ("tech.rh", "Sofie Nielsen", Role.TECHNICIAN, "RH"),
    ("manager.rh", "Lars Petersen", Role.MANAGER, "RH"),
    ("tech.ouh", "Camilla Jensen", Role.TECHNICIAN, "OUH"),
    ("manager.ouh", "Henrik Madsen", Role.MANAGER, "OUH"),
    ("tech.auh", "Ida Sørensen", Role.TECHNICIAN, "AUH"),
    ("manager.auh", "Jens Rasmussen", Role.MANAGER, "AUH"),
    ("tech.aauh", "Freja Christensen", Role.TECHNICIAN, "AAUH"),
    ("manager.aauh", "Anders Larsen", Role.MANAGER, "AAUH"),
    ("tech.hgh", "Emma Andersen", Role.TECHNICIAN, "HGH"),
    ("manager.hgh", "Mikkel Pedersen", Role.MANAGER, "HGH"),
    ("researcher.auh", "Anne Holm", Role.RESEARCHER, "AUH"),
    ("researcher.rh", "Peter Vestergaard", Role.RESEARCHER, "RH"),
]


def load_demo(session: Session, *, password: str | None = None) -> list[str]:
    """Create what is missing; return lines to print (the generated password, once)."""
    report: list[str] = []
    # On an empty database the network is set up "300 days ago", before the demo episodes
    # replay their history, so that the audit trail's times never go backwards.
    fresh = session.scalar(select(Site.id).limit(1)) is None
    founded = utcnow() - timedelta(days=300) if fresh else utcnow()
    generated = None if password is not None else secrets.token_urlsafe(12)
    with replayed_time(founded):
        created = _create_network(session, password or generated, report)
        _create_freezers(session)
    for username, *_ in USERS:
        if password is not None and username not in created:
            user = session.scalar(select(User).where(User.username == username))
            services.set_password(
                session, actor=None, user_id=user.id, password=password, must_change=False
            )
    report.append(f"demo users: {', '.join(u for u, *_ in USERS)}")
    if password is not None:
        report.append("every demo user has the password given with --password")
    elif created:
        report.append(f"password of the {len(created)} new demo users (shown once): {generated}")
    else:
        report.append("demo users existed already; their passwords are unchanged")
    known_password = password or (generated if created else None)
    if known_password is None:
        report.append("demo episodes need the users' password: run lims demo --password PW")
    else:
        from lims.demo_episodes import load_demo_episodes

        report.extend(load_demo_episodes(session, password=known_password))
    return report


def _create_network(session: Session, password: str, report: list[str]) -> list[str]:
    """Create the missing sites and users (with ``password``); return the users created."""
    for code, name, city, fin in SITES:
        if session.scalar(select(Site).where(Site.code == code)) is None:
            services.create_site(session, actor=None, code=code, name=name, city=city, isbt_fin=fin)
            report.append(f"site {code} created")
    created = []
    for username, full_name, role, site_code in USERS:
        if session.scalar(select(User).where(User.username == username)) is None:
            services.create_user(
                session,
                actor=None,
                username=username,
                full_name=full_name,
                email=f"{username}@demo.invalid",
                role=role,
                site_code=site_code,
                password=password,
            )
            created.append(username)
    return created


def _create_freezers(session: Session) -> None:
    """Each site's biobank manager sets up the site's freezers (kept if they exist)."""
    from lims.demo_storage import build_freezers

    for username, _, role, _ in USERS:
        if role is Role.MANAGER:
            build_freezers(session, session.scalar(select(User).where(User.username == username)))
