"""The cast of the integration tests: a small CAR-T network and one person per job."""

from __future__ import annotations

from types import SimpleNamespace

from lims.auth.models import User
from lims.auth.services import Witness
from lims.patients import services as patients


def build_cast(make_site, make_user) -> dict[str, SimpleNamespace]:
    """RH treats, AUH manufactures, OUH is another hospital, HGH has no ISBT 128 FIN."""
    make_site("RH", isbt_fin="W1234")
    make_site("AUH", isbt_fin="W5678")
    make_site("OUH", isbt_fin="W9012")
    make_site("HGH")
    cast = {
        "tech": make_user("technician", site_code="RH", full_name="Tina Tech"),
        "tech2": make_user("technician", site_code="RH", full_name="Theo Tech"),
        "manager": make_user("manager", site_code="RH", full_name="Mona Manager"),
        "maker": make_user("technician", site_code="AUH", full_name="Mads Maker"),
        "qp": make_user("manager", site_code="AUH", full_name="Quinn Person"),
        "elsewhere": make_user("technician", site_code="OUH", full_name="Olga Other"),
        "researcher": make_user("researcher", site_code="RH"),
        "admin": make_user("admin", site_code="RH"),
    }
    # The manufacturing site's staff are "another site's" staff for identity questions.
    cast["other_tech"], cast["other_manager"] = cast["maker"], cast["qp"]
    return cast


def actor(session, person: SimpleNamespace) -> User:
    """The person as the account object the services take."""
    return session.get(User, person.id)


def cpr(n: int) -> str:
    """A CPR number with a real birth date, distinct for n up to 1,000: 1 Jan 1960 + n years
    for n below 40, then the next days of January; mod 11 may warn."""
    day, year = 1 + (n // 40) % 28, 60 + n % 40
    return f"{day:02d}01{year:02d}1{n % 1000:03d}"


def new_episode(session, tech: User, *, n: int = 1, product: str = "Yescarta"):
    """Patient n (CPR ``cpr(n)``) treated at RH, and an episode of ``product`` for them."""
    patient, _ = patients.register_patient(
        session, actor=tech, identifier=cpr(n), name=f"Patient {n}", treating_site_code="RH"
    )
    return patients.register_episode(
        session,
        actor=tech,
        pseudonym=patient.pseudonym,
        product_name=product,
        product_kind="commercial",
    )


def second_person(session, person: SimpleNamespace) -> Witness:
    """``person`` as the second person of a step, as if their password had just been checked."""
    return Witness(actor(session, person))
