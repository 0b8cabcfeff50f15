"""The patients and episodes of a benchmark data set, written in bulk.

A patient's identity (an invented CPR number, name and birth date) is encrypted through the
project's identity vault with its keyed look-up hash, as ``register_patient`` stores it; an
episode's Chain of Identity is CH + the site's FIN + this year + a number, with its check
character, as ``lims.custody.numbering.new_coi`` forms it.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from benchmarks.bulk import AuditChain, BulkWriter, complete
from benchmarks.plan import Plan
from lims import identifiers
from lims.db import utcnow
from lims.patients.models import Episode, Patient
from lims.patients.services import PSEUDONYM_ALPHABET, vault

if TYPE_CHECKING:
    from benchmarks.dataset import Actor

REASON = "generated benchmark data set"


def write_patients_and_episodes(
    session: Session,
    writer: BulkWriter,
    chain: AuditChain,
    plan: Plan,
    sites: list[int],
    techs: list[Actor],
) -> tuple[int, list[int]]:
    """Write every patient and episode of the plan (the site's technician registers them);
    returns the first episode's id and the CoI numbers used per site."""
    rng = random.Random(plan.spec.seed + 1)  # noqa: S311 (seeded on purpose)
    first_patient = writer.next_id(Patient.__table__)
    first_episode = writer.next_id(Episode.__table__)
    earliest: dict[int, datetime] = {}
    for episode in plan.episodes:
        earliest[episode.patient] = min(episode.infused_at, earliest.get(episode.patient, plan.now))
    keys, pseudonyms, cprs = vault(), set(), set()
    patients = []
    for number, site in enumerate(plan.patient_sites):
        while (pseudonym := "P" + "".join(rng.choices(PSEUDONYM_ALPHABET, k=7))) in pseudonyms:
            pass
        while True:
            born = datetime(1940, 1, 1) + timedelta(days=rng.randint(0, 60 * 365 - 1))
            cpr = f"{born:%d%m%y}{rng.randint(0, 3999):04d}"  # 7th digit 0-3: born 19xx
            if cpr not in cprs:
                break
        pseudonyms.add(pseudonym)
        cprs.add(cpr)
        values = {
            "id": first_patient + number,
            "pseudonym": pseudonym,
            "identifier_kind": "cpr",
            "cpr_hmac": keys.lookup_hash(cpr),
            "cpr_ciphertext": keys.encrypt(cpr, field="cpr"),
            "name_ciphertext": keys.encrypt(f"Bench Patient {number + 1:05d}", field="name"),
            "birth_date_ciphertext": keys.encrypt(born.date().isoformat(), field="birth_date"),
            "treating_site_id": sites[site],
            "consent_biobank": rng.random() < 0.95,
            "consent_genetic": rng.random() < 0.7,
            "consent_withdrawn_at": None,
            "created_at": earliest[number] - timedelta(days=40),
        }
        patients.append(complete(Patient.__table__, values))
        chain.created(
            at=utcnow(), actor=techs[site].audit, entity="patient", values=values, reason=REASON
        )
    writer.write(Patient.__table__, patients)
    year = plan.now.strftime("%y")
    coi_numbers = [0] * len(plan.sites)
    episodes = []
    for number, episode in enumerate(plan.episodes):
        fin = plan.sites[episode.site].fin
        coi_numbers[episode.site] += 1
        coi = f"CH{fin}{year}{coi_numbers[episode.site]:06d}"
        values = {
            "id": first_episode + number,
            "patient_id": first_patient + episode.patient,
            "coi": coi,
            "coi_check": identifiers.coi_check_character(coi),
            "product_name": episode.product,
            "product_kind": "commercial",
            "protocol": episode.study,
            "treating_site_id": sites[episode.site],
            "planned_infusion_date": episode.infused_at.date(),
            "infused_at": episode.infused_at,
            "created_at": episode.infused_at - timedelta(days=30),
            "version": 1,
        }
        episodes.append(complete(Episode.__table__, values))
        chain.created(
            at=utcnow(),
            actor=techs[episode.site].audit,
            entity="episode",
            values=values,
            reason=REASON,
        )
    writer.write(Episode.__table__, episodes)
    chain.flush(writer)
    session.commit()
    return first_episode, coi_numbers
