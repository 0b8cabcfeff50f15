"""Use cases for patients, their consent and their treatment episodes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lims import identifiers
from lims.audit import services as audit
from lims.auth.models import Role, Site, User
from lims.auth.services import require_role, site_by_code
from lims.custody import holds
from lims.custody.models import HoldReason
from lims.custody.numbering import new_coi
from lims.db import utcnow
from lims.errors import Conflict, Forbidden, NotFound, ValidationError
from lims.patients.models import Episode, IdentifierKind, Patient, ProductKind
from lims.patients.vault import IdentityVault

CLINICAL = (Role.TECHNICIAN, Role.MANAGER)
#: Crockford's base32 without I, L, O, U: pseudonyms read aloud or retyped without confusion.
PSEUDONYM_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def vault() -> IdentityVault:
    return current_app.extensions["lims_vault"]


def new_pseudonym() -> str:
    return "P" + "".join(secrets.choice(PSEUDONYM_ALPHABET) for _ in range(7))


@dataclass(frozen=True)
class Identity:
    identifier: str
    identifier_kind: IdentifierKind
    name: str
    birth_date: date


def parse_identifier_kind(
    value: IdentifierKind | str, field: str = "identifier_kind"
) -> IdentifierKind:
    try:
        return IdentifierKind(value)
    except ValueError:
        raise ValidationError(
            f"The identifier is one of: {', '.join(IdentifierKind)}.", field=field
        ) from None


def normalise_identifier(kind: IdentifierKind, text: str) -> tuple[str, date | None, list[str]]:
    """The identifier as it is hashed, the birth date it implies, and warnings to show."""
    if kind is IdentifierKind.CPR:
        try:
            result = identifiers.parse_cpr(text)
        except identifiers.IdentifierError as exc:
            raise ValidationError(exc.message, field="cpr") from None
        return result.cpr, result.birth_date, list(result.warnings)
    value = "".join(text.split()).upper()
    if not (4 <= len(value) <= 40):
        raise ValidationError("A replacement identifier is 4 to 40 characters.", field="cpr")
    return "R:" + value, None, []


def get_patient(session: Session, pseudonym: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.pseudonym == pseudonym.upper()))
    if patient is None:
        raise NotFound(f"No patient with pseudonym {pseudonym}.")
    return patient


def register_patient(
    session: Session,
    *,
    actor: User | None,
    identifier: str,
    name: str,
    treating_site_code: str,
    identifier_kind: IdentifierKind | str = IdentifierKind.CPR,
    birth_date: date | None = None,
    consent_biobank: bool = False,
    consent_genetic: bool = False,
) -> tuple[Patient, list[str]]:
    """Register a patient under a new pseudonym; returns it with warnings (e.g. mod 11)."""
    require_role(actor, *CLINICAL)
    kind = parse_identifier_kind(identifier_kind)
    normalised, implied_birth, warnings = normalise_identifier(kind, identifier)
    birth = birth_date or implied_birth
    if birth is None:
        raise ValidationError("Give the date of birth.", field="birth_date")
    if implied_birth and birth_date and birth_date != implied_birth:
        raise ValidationError(
            "The date of birth does not match the CPR number.", field="birth_date"
        )
    if not name.strip():
        raise ValidationError("Give the patient's name.", field="name")
    site = site_by_code(session, treating_site_code)
    lookup = vault().lookup_hash(normalised)
    existing = session.scalar(select(Patient).where(Patient.cpr_hmac == lookup))
    if existing is not None:
        raise Conflict(f"This patient is registered already as {existing.pseudonym}.", field="cpr")
    patient = Patient(
        pseudonym=new_pseudonym(),
        identifier_kind=kind,
        cpr_hmac=lookup,
        cpr_ciphertext=vault().encrypt(normalised, field="cpr"),
        name_ciphertext=vault().encrypt(name.strip(), field="name"),
        birth_date_ciphertext=vault().encrypt(birth.isoformat(), field="birth_date"),
        treating_site=site,
        consent_biobank=consent_biobank,
        consent_genetic=consent_genetic,
    )
    session.add(patient)
    try:
        audit.record_created(session, patient, actor=actor)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict("This patient is registered already.", field="cpr") from None
    return patient, warnings


def may_see_identity(actor: User | None, patient: Patient) -> bool:
    """Clinical roles of the treating site only; the command line (server admin) too."""
    if actor is None:
        return True
    return actor.role in CLINICAL and actor.site_id == patient.treating_site_id


def reveal_identity(session: Session, *, actor: User | None, pseudonym: str) -> Identity:
    """Decrypt a patient's identity for an authorised user; every view is audited."""
    patient = get_patient(session, pseudonym)
    if not may_see_identity(actor, patient):
        raise Forbidden("Only technicians and managers of the treating site see who this is.")
    identifier = vault().decrypt(patient.cpr_ciphertext, field="cpr")
    identity = Identity(
        identifier=(
            identifiers.format_cpr(identifier)
            if patient.identifier_kind is IdentifierKind.CPR
            else identifier.removeprefix("R:")
        ),
        identifier_kind=patient.identifier_kind,
        name=vault().decrypt(patient.name_ciphertext, field="name"),
        birth_date=date.fromisoformat(
            vault().decrypt(patient.birth_date_ciphertext, field="birth_date")
        ),
    )
    audit.record_action(
        session, actor=actor, entity="patient", entity_id=patient.id, action="view_identity"
    )
    session.commit()
    return identity


def matches_identifier(patient: Patient, kind: IdentifierKind, text: str) -> bool:
    """Whether a scanned or typed identifier is this patient's (compared by keyed hash)."""
    try:
        normalised, _, _ = normalise_identifier(kind, text)
    except ValidationError:
        return False
    return vault().lookup_hash(normalised) == patient.cpr_hmac


def record_consent(
    session: Session,
    *,
    actor: User | None,
    pseudonym: str,
    biobank: bool,
    genetic: bool,
    withdrawn: bool,
    reason: str,
) -> Patient:
    """Change consent (always with a reason); withdrawal puts all the material on hold."""
    require_role(actor, *CLINICAL)
    if not reason or not reason.strip():
        raise ValidationError("Give the reason for the consent change.", field="reason")
    patient = get_patient(session, pseudonym)
    if actor is not None and actor.site_id != patient.treating_site_id:
        raise Forbidden("Consent is recorded by the treating site.")
    newly_withdrawn = withdrawn and patient.consent_withdrawn_at is None
    if patient.consent_withdrawn_at is not None and not withdrawn:
        raise Conflict("Consent was withdrawn; a new consent is recorded as a new registration.")
    # Imported here: the request services build on the custody services, which use these.
    from lims.requests import services as requests

    if newly_withdrawn:
        # The request steps lock their request, then its tubes, then the audit chain: take the
        # same order here, before the first audit row, so the two never deadlock.
        requests.lock_for_withdrawal(session, patient.id)
    patient.consent_biobank = biobank and not withdrawn
    patient.consent_genetic = genetic and not withdrawn
    if newly_withdrawn:
        patient.consent_withdrawn_at = utcnow()
    audit.record_changes(session, patient, actor=actor, action="consent", reason=reason)
    if newly_withdrawn:
        holds.hold_patient_material(
            session,
            actor=actor,
            patient_id=patient.id,
            reason=HoldReason.CONSENT_WITHDRAWN,
            detail=f"consent withdrawn: {reason.strip()}",
        )
        requests.pull_withdrawn_consent(
            session, actor=actor, patient_id=patient.id, reason=reason.strip()
        )
    session.commit()
    if newly_withdrawn:
        requests.mail_after_commit(session)
    return patient


def get_episode(session: Session, coi: str) -> Episode:
    text = coi.strip().upper()
    if text.startswith("&/"):
        try:
            text = identifiers.parse_coi(text, scanned=True).value
        except identifiers.IdentifierError as exc:
            raise ValidationError(exc.message, field="coi") from None
    elif len(text) == 16:  # typed with its check character
        try:
            text = identifiers.parse_coi(text, scanned=False).value
        except identifiers.IdentifierError as exc:
            raise ValidationError(exc.message, field="coi") from None
    episode = session.scalar(select(Episode).where(Episode.coi == text))
    if episode is None:
        raise NotFound(f"No treatment episode with Chain of Identity {coi}.")
    return episode


def register_episode(
    session: Session,
    *,
    actor: User | None,
    pseudonym: str,
    product_name: str,
    product_kind: ProductKind | str,
    protocol: str = "",
    treating_site_code: str | None = None,
    planned_infusion_date: date | None = None,
) -> Episode:
    """Open a treatment episode and assign its Chain of Identity identifier."""
    require_role(actor, *CLINICAL)
    patient = get_patient(session, pseudonym)
    site: Site = (
        site_by_code(session, treating_site_code) if treating_site_code else patient.treating_site
    )
    try:
        kind = ProductKind(product_kind)
    except ValueError:
        raise ValidationError(
            "The product is commercial or academic.", field="product_kind"
        ) from None
    if not product_name.strip():
        raise ValidationError("Name the CAR-T product.", field="product_name")
    coi, check = new_coi(session, site)
    episode = Episode(
        patient=patient,
        coi=coi,
        coi_check=check,
        product_name=product_name.strip(),
        product_kind=kind,
        protocol=protocol.strip(),
        treating_site=site,
        planned_infusion_date=planned_infusion_date,
    )
    session.add(episode)
    audit.record_created(session, episode, actor=actor)
    session.commit()
    return episode
