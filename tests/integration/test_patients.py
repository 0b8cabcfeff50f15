"""Patients, their encrypted identity, consent and treatment episodes against a real database."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, date, datetime

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import func, select, text

from lims import db as lims_db
from lims import identifiers
from lims.audit.models import AuditEntry
from lims.auth.models import User
from lims.custody import holds, numbering, production
from lims.custody.domain import Action
from lims.custody.models import Hold, HoldReason, Item
from lims.custody.services import Move, perform_action
from lims.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationError
from lims.patients import services as patients
from lims.patients.models import Episode, IdentifierKind, Patient
from lims.patients.vault import IdentityVault
from tests.integration.people import actor

CPR = "211062-5629"  # passes mod 11; born 1862-10-21 by the century rule (DOMAIN.md says 1962)
CPR_DIGITS = "2110625629"
NAME = "Karen Margrethe Hansen"


def register(session, who, identifier=CPR, name=NAME, **options) -> Patient:
    patient, _ = patients.register_patient(
        session, actor=who, identifier=identifier, name=name, treating_site_code="RH", **options
    )
    return patient


def view_rows(session, patient) -> list[AuditEntry]:
    return list(
        session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.entity == "patient",
                AuditEntry.entity_id == str(patient.id),
                AuditEntry.action == "view_identity",
            )
            .order_by(AuditEntry.seq)
        )
    )


def count(session, model, *criteria) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*criteria))


# -- identity at rest -------------------------------------------------------------------------


def test_identity_is_stored_encrypted(app, people):
    with app.app_context():
        session = lims_db.session()
        patient = register(session, actor(session, people["tech"]))
        raw = (
            session.execute(text("SELECT * FROM patient WHERE id = :id"), {"id": patient.id})
            .mappings()
            .one()
        )
        stored = " ".join(str(value) for value in raw.values())
        secrets = [CPR, CPR_DIGITS, "Karen", "Hansen", "Margrethe", "1862-10-21", "21.10.1862"]
        secrets += ["21-10-1862", "18621021", "211062"]
        for secret in secrets:
            assert secret.lower() not in stored.lower(), secret
        # The audit trail does not hold the identity either.
        trail = " ".join(
            f"{r.old_value} {r.new_value} {r.reason}" for r in session.scalars(select(AuditEntry))
        )
        assert trail.strip()
        for secret in secrets:
            assert secret.lower() not in trail.lower(), secret
        # It is encrypted, not thrown away: the vault opens each field for its own purpose.
        vault = app.extensions["lims_vault"]
        assert vault.decrypt(raw["cpr_ciphertext"], field="cpr") == CPR_DIGITS
        assert vault.decrypt(raw["name_ciphertext"], field="name") == NAME
        assert vault.decrypt(raw["birth_date_ciphertext"], field="birth_date") == "1862-10-21"
        with pytest.raises(InvalidTag):  # the field name is authenticated data
            vault.decrypt(raw["cpr_ciphertext"], field="name")


def test_same_name_encrypts_differently(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        first = register(session, tech, identifier="0707614285", name="Jens Jensen")
        second = register(session, tech, identifier="2110620629", name="Jens Jensen")
        assert first.name_ciphertext != second.name_ciphertext
        assert first.pseudonym != second.pseudonym


def test_lookup_hash_is_keyed(app, people):
    with app.app_context():
        session = lims_db.session()
        patient = register(session, actor(session, people["tech"]))
        stored = session.execute(
            text("SELECT cpr_hmac FROM patient WHERE id = :id"), {"id": patient.id}
        ).scalar_one()
        for plain in (CPR_DIGITS, CPR):
            assert stored != hashlib.sha256(plain.encode()).hexdigest()
        assert len(stored) == 64
        assert stored == app.extensions["lims_vault"].lookup_hash(CPR_DIGITS)
        other_key = base64.b64encode(bytes(range(32))).decode()
        assert IdentityVault(other_key).lookup_hash(CPR_DIGITS) != stored


@pytest.mark.parametrize(
    ("first", "second"),
    [(CPR_DIGITS, CPR), (CPR, CPR_DIGITS), (CPR, f"  {CPR_DIGITS} "), (CPR, "211062 5629")],
)
def test_a_patient_is_registered_once(app, people, first, second):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        patient = register(session, tech, identifier=first)
        rows = count(session, AuditEntry)
        with pytest.raises(Conflict, match=patient.pseudonym) as refusal:
            register(session, tech, identifier=second, name="Someone Else")
        assert refusal.value.field == "cpr"
        session.rollback()
        assert count(session, Patient) == 1
        assert count(session, AuditEntry) == rows


def test_mod11_failure_is_a_warning_not_a_refusal(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        patient, warnings = patients.register_patient(
            session, actor=tech, identifier="0101643066", name="A B", treating_site_code="RH"
        )
        assert len(warnings) == 1 and "modulus 11" in warnings[0]
        identity = patients.reveal_identity(session, actor=tech, pseudonym=patient.pseudonym)
        assert identity.birth_date == date(1964, 1, 1)
        assert identity.identifier == "010164-3066"
        _, clean = patients.register_patient(
            session, actor=tech, identifier=CPR, name="C D", treating_site_code="RH"
        )
        assert clean == []


@pytest.mark.parametrize(
    ("identifier", "options", "field"),
    [
        ("3102621234", {}, "cpr"),  # 31 February
        ("21106256", {}, "cpr"),
        (CPR, {"birth_date": date(1962, 10, 22)}, "birth_date"),
        (CPR, {"name": "   "}, "name"),
    ],
)
def test_registration_refusals(app, people, identifier, options, field):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        options = dict(options)  # the parameters are shared by both backends
        name = options.pop("name", NAME)
        with pytest.raises(ValidationError) as refusal:
            register(session, tech, identifier=identifier, name=name, **options)
        assert refusal.value.field == field
        session.rollback()
        assert count(session, Patient) == 0


@pytest.mark.parametrize("role", ["researcher", "admin"])
def test_only_clinical_roles_register_patients(app, people, role):
    with app.app_context():
        session = lims_db.session()
        with pytest.raises(Forbidden):
            register(session, actor(session, people[role]))
        assert count(session, Patient) == 0


def test_replacement_identifier_for_a_foreign_patient(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        with pytest.raises(ValidationError, match="date of birth"):
            register(session, tech, identifier="D 1234-5678", identifier_kind="replacement")
        session.rollback()
        with pytest.raises(ValidationError, match="4 to 40"):
            register(
                session,
                tech,
                identifier="AB1",
                identifier_kind="replacement",
                birth_date=date(1970, 5, 4),
            )
        session.rollback()
        patient = register(
            session,
            tech,
            identifier="d 1234-5678",
            name="Hans Müller",
            identifier_kind="replacement",
            birth_date=date(1970, 5, 4),
        )
        assert patient.identifier_kind is IdentifierKind.REPLACEMENT
        identity = patients.reveal_identity(session, actor=tech, pseudonym=patient.pseudonym)
        assert identity.identifier == "D1234-5678"
        assert identity.identifier_kind is IdentifierKind.REPLACEMENT
        assert (identity.name, identity.birth_date) == ("Hans Müller", date(1970, 5, 4))
        assert "1234-5678" not in " ".join(
            str(v) for v in session.execute(text("SELECT * FROM patient")).mappings().one().values()
        )
        assert patients.matches_identifier(patient, IdentifierKind.REPLACEMENT, "D12345678 ") is (
            False  # the hyphen is part of a foreign identifier
        )
        assert patients.matches_identifier(patient, IdentifierKind.REPLACEMENT, " D1234-5678")
        assert not patients.matches_identifier(patient, IdentifierKind.CPR, "D1234-5678")
        with pytest.raises(Conflict):
            register(
                session,
                tech,
                identifier="D1234-5678",
                identifier_kind="replacement",
                birth_date=date(1970, 5, 4),
            )


# -- who sees the identity ----------------------------------------------------------------------


@pytest.mark.parametrize("who", ["tech", "manager"])
def test_treating_site_staff_see_the_identity_and_every_view_is_logged(app, people, who):
    with app.app_context():
        session = lims_db.session()
        patient = register(session, actor(session, people["tech"]))
        viewer = actor(session, people[who])
        assert view_rows(session, patient) == []
        for _ in range(2):
            identity = patients.reveal_identity(
                session, actor=viewer, pseudonym=patient.pseudonym.lower()
            )
            assert identity.identifier == CPR
            assert identity.identifier_kind is IdentifierKind.CPR
            assert identity.name == NAME and identity.birth_date == date(1862, 10, 21)
        logged = view_rows(session, patient)
        assert len(logged) == 2
        assert all(r.user_id == viewer.id and r.actor == viewer.username for r in logged)
        assert all(CPR_DIGITS not in (r.new_value or "") for r in logged)


@pytest.mark.parametrize("who", ["other_tech", "other_manager", "researcher", "admin"])
def test_others_may_not_see_the_identity(app, people, who):
    with app.app_context():
        session = lims_db.session()
        patient = register(session, actor(session, people["tech"]))
        rows = count(session, AuditEntry)
        with pytest.raises(Forbidden):
            patients.reveal_identity(
                session, actor=actor(session, people[who]), pseudonym=patient.pseudonym
            )
        session.rollback()
        assert count(session, AuditEntry) == rows
        assert view_rows(session, patient) == []


def test_unknown_pseudonym(app, people):
    with app.app_context():
        session = lims_db.session()
        with pytest.raises(NotFound):
            patients.reveal_identity(
                session, actor=actor(session, people["tech"]), pseudonym="PNOSUCH1"
            )


# -- consent ------------------------------------------------------------------------------------


def material_of(session, tech, patient) -> dict[str, Item]:
    episode = patients.register_episode(
        session,
        actor=tech,
        pseudonym=patient.pseudonym,
        product_name="Kymriah",
        product_kind="commercial",
    )
    collection = production.register_collection(
        session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
    )
    sample = production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type="whole_blood",
        quantity=10,
        unit="mL",
        collected_at=lims_db.utcnow(),
    )
    first, second, spilt = production.aliquot(
        session,
        actor=tech,
        parent_code=sample.code,
        count=3,
        quantity_each=1,
        unit="mL",
        material_type="plasma",
    )
    for aliquot in (first, second):
        perform_action(session, actor=tech, code=aliquot.code, action=Action.STORE)
    perform_action(session, actor=tech, code=spilt.code, action=Action.DISCARD, reason="spilt")
    return {
        "collection": collection,
        "sample": sample,
        "first": first,
        "second": second,
        "spilt": spilt,
    }


def test_consent_withdrawal_puts_all_open_material_on_hold(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        patient = register(session, tech, consent_biobank=True, consent_genetic=True)
        bystander = register(session, tech, identifier="0707614285", name="Other Person")
        material = material_of(session, tech, patient)
        untouched = material_of(session, tech, bystander)
        for reason in ("", "  "):
            with pytest.raises(ValidationError, match="reason"):
                patients.record_consent(
                    session,
                    actor=tech,
                    pseudonym=patient.pseudonym,
                    biobank=False,
                    genetic=False,
                    withdrawn=True,
                    reason=reason,
                )
            session.rollback()
        assert count(session, Hold) == 0
        assert session.get(Patient, patient.id).consent_withdrawn_at is None

        patients.record_consent(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            biobank=True,
            genetic=True,
            withdrawn=True,
            reason="letter of 3 March",
        )
        withdrawn = session.get(Patient, patient.id)
        assert withdrawn.consent_withdrawn_at is not None
        assert (withdrawn.consent_biobank, withdrawn.consent_genetic) == (False, False)
        for name, item in material.items():
            open_holds = holds.open_holds(session, item.id)
            if name == "spilt":
                assert open_holds == []
                continue
            (hold,) = open_holds
            assert hold.reason is HoldReason.CONSENT_WITHDRAWN, name
            assert "letter of 3 March" in hold.detail and hold.placed_by_id == tech.id
            (row,) = session.scalars(
                select(AuditEntry).where(
                    AuditEntry.entity == "hold", AuditEntry.entity_id == str(hold.id)
                )
            )
            assert row.action == "create" and row.user_id == tech.id
            assert json.loads(row.new_value)["item_id"] == str(item.id)
        for item in untouched.values():
            assert holds.open_holds(session, item.id) == []
        consent_rows = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "patient",
                AuditEntry.entity_id == str(patient.id),
                AuditEntry.action == "consent",
            )
        ).all()
        assert {r.field for r in consent_rows} == {
            "consent_biobank",
            "consent_genetic",
            "consent_withdrawn_at",
        }
        assert all(r.reason == "letter of 3 March" and r.user_id == tech.id for r in consent_rows)

        with pytest.raises(InvalidTransition, match="on hold"):
            perform_action(
                session, actor=manager, code=material["first"].code, action="reserve", internal=True
            )
        session.rollback()
        held = count(session, Hold)
        patients.record_consent(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            biobank=False,
            genetic=False,
            withdrawn=True,
            reason="second letter",
        )
        assert count(session, Hold) == held  # no second hold for the same reason
        with pytest.raises(Conflict, match="new registration"):
            patients.record_consent(
                session,
                actor=tech,
                pseudonym=patient.pseudonym,
                biobank=True,
                genetic=True,
                withdrawn=False,
                reason="changed mind",
            )


def test_material_registered_after_withdrawal_is_on_hold(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        patient = register(session, tech, consent_biobank=True)
        material = material_of(session, tech, patient)
        patients.record_consent(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            biobank=False,
            genetic=False,
            withdrawn=True,
            reason="phone call",
        )
        (child,) = production.aliquot(
            session,
            actor=tech,
            parent_code=material["first"].code,
            count=1,
            quantity_each="0.5",
            unit="mL",
            material_type="plasma",
        )
        sample = production.register_sample(
            session,
            actor=tech,
            coi=material["sample"].episode.coi,
            material_type="serum",
            quantity=2,
            unit="mL",
            collected_at=lims_db.utcnow(),
        )
        for item in (child, sample):
            (hold,) = holds.open_holds(session, item.id)
            assert hold.reason is HoldReason.CONSENT_WITHDRAWN
            perform_action(session, actor=tech, code=item.code, action=Action.STORE)
            with pytest.raises(InvalidTransition, match="on hold"):
                perform_action(
                    session, actor=manager, code=item.code, action=Action.RESERVE, internal=True
                )
            session.rollback()


@pytest.mark.parametrize("who", ["other_tech", "researcher", "admin"])
def test_consent_is_recorded_by_the_treating_site_only(app, people, who):
    with app.app_context():
        session = lims_db.session()
        patient = register(session, actor(session, people["tech"]), consent_biobank=True)
        with pytest.raises(Forbidden):
            patients.record_consent(
                session,
                actor=actor(session, people[who]),
                pseudonym=patient.pseudonym,
                biobank=False,
                genetic=False,
                withdrawn=True,
                reason="x",
            )
        session.rollback()
        assert session.get(Patient, patient.id).consent_withdrawn_at is None


# -- episodes and their Chain of Identity -----------------------------------------------------


def open_episode(session, who, patient, **options) -> Episode:
    return patients.register_episode(
        session,
        actor=who,
        pseudonym=patient.pseudonym,
        product_name=options.pop("product_name", "Breyanzi"),
        product_kind=options.pop("product_kind", "commercial"),
        **options,
    )


def test_episodes_get_sequential_coi_identifiers_per_fin_and_year(app, people, monkeypatch):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        patient = register(session, tech)
        other = register(session, tech, identifier="0707614285", name="Other Person")
        year = lims_db.utcnow().strftime("%y")
        episodes = [
            open_episode(session, tech, patient),
            open_episode(session, tech, other, product_kind="academic", protocol=" CART-DK-1 "),
            open_episode(session, tech, patient, treating_site_code="AUH"),
            open_episode(session, tech, other),
        ]
        assert [e.coi for e in episodes] == [
            f"CHW1234{year}000001",
            f"CHW1234{year}000002",
            f"CHW5678{year}000001",
            f"CHW1234{year}000003",
        ]
        for episode in episodes:
            parsed = identifiers.parse_coi(episode.coi + episode.coi_check, scanned=False)
            assert parsed.value == episode.coi and parsed.check == episode.coi_check
            assert identifiers.parse_coi(f"&/{episode.coi}", scanned=True).check == (
                episode.coi_check
            )
            row = session.scalars(
                select(AuditEntry).where(
                    AuditEntry.entity == "episode", AuditEntry.entity_id == str(episode.id)
                )
            ).one()
            assert row.action == "create" and row.user_id == tech.id
            assert json.loads(row.new_value)["coi"] == episode.coi
        assert episodes[1].protocol == "CART-DK-1"
        assert episodes[2].treating_site.code == "AUH"

        # A new year starts a new sequence for the FIN.
        monkeypatch.setattr(numbering, "utcnow", lambda: datetime(2031, 1, 2, tzinfo=UTC))
        next_year = open_episode(session, tech, patient)
        assert next_year.coi == "CHW123431000001"
        assert identifiers.coi_check_character(next_year.coi) == next_year.coi_check


def test_episode_at_a_site_without_fin_is_refused(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        patient = register(session, tech)
        rows = count(session, AuditEntry)
        with pytest.raises(Conflict, match="FIN"):
            open_episode(session, tech, patient, treating_site_code="HGH")
        session.rollback()
        assert count(session, Episode) == 0 and count(session, AuditEntry) == rows
        with pytest.raises(ValidationError, match="commercial or academic"):
            open_episode(session, tech, patient, product_kind="homebrew")
        session.rollback()
        with pytest.raises(Forbidden):
            open_episode(session, actor(session, people["researcher"]), patient)


def test_get_episode_by_scanned_or_typed_coi(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = open_episode(session, tech, register(session, tech))
        coi, k = episode.coi, episode.coi_check
        for text_ in (coi, f"&/{coi}", coi + k, (coi + k).lower()):
            assert patients.get_episode(session, text_).id == episode.id
        wrong = identifiers.MOD37_2_CHARSET[(identifiers.MOD37_2_CHARSET.index(k) + 1) % 37]
        with pytest.raises(ValidationError, match="check character"):
            patients.get_episode(session, coi + wrong)
        with pytest.raises(NotFound):
            patients.get_episode(session, "CHW123499999999")


def test_withdrawn_material_is_held_but_can_still_be_discarded(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        patient = register(session, tech)
        material = material_of(session, tech, patient)
        patients.record_consent(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            biobank=False,
            genetic=False,
            withdrawn=True,
            reason="destroy samples",
        )
        event = perform_action(
            session,
            actor=tech,
            code=material["second"].code,
            action=Action.DISCARD,
            reason="consent withdrawn",
            move=Move(location="waste"),
        )
        assert event.to_state == "discarded"


def test_unknown_identifier_kind_is_a_clear_refusal(app, make_site, make_user):
    from lims.errors import ValidationError as Refused

    make_site("RH", isbt_fin="W1234")
    with app.app_context():
        session = lims_db.session()
        tech = session.get(User, make_user(site_code="RH").id)
        with pytest.raises(Refused, match="The identifier is one of") as refused:
            patients.register_patient(
                session,
                actor=tech,
                identifier="0707614285",
                identifier_kind="passport",
                name="X",
                treating_site_code="RH",
            )
        assert refused.value.field == "identifier_kind"
