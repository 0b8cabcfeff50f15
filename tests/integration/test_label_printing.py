"""Printing labels against a real database and a real TCP listener: the print record, reprint
control, scan-back and the custody guard that waits for it, and no patient identity on
research labels."""

from __future__ import annotations

import dataclasses
import socket
import threading
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.custody import production
from lims.custody.domain import Action
from lims.custody.models import Item
from lims.custody.services import Move, perform_action
from lims.errors import Conflict, Forbidden, InvalidTransition, ValidationError
from lims.labels import content, printing
from lims.labels.models import PrintedLabel, PrintJob, PrintStatus
from lims.labels.render import render
from lims.labels.verification import verify_label
from lims.patients.services import reveal_identity
from tests.conftest import PASSWORD
from tests.integration.people import actor, new_episode, second_person
from tests.integration.test_custody_services import quarantined_lot, rows
from tests.integration.test_storage import box, freezer, tubes

GUARD = "label not verified: scan the label first"


@contextmanager
def listening_printer():
    """A stand-in Zebra: accepts one connection on a free port and keeps every byte sent."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    received = bytearray()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.settimeout(10)
            while chunk := connection.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], received, thread
    finally:
        thread.join(10)
        server.close()


def closed_port() -> int:
    """A port nothing listens on (bound once, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_printer(app, port: int, *, host="127.0.0.1", dpi=300, kinds=["cryovial"]) -> None:  # noqa: B006
    app.config["LIMS"]["labels"]["printers"] = {
        "RH": [{"name": "Bench Zebra", "host": host, "port": port, "dpi": dpi, "kinds": kinds}]
    }


def jobs(session) -> int:
    return session.scalar(select(func.count()).select_from(PrintJob))


def audit_actions(session, item: Item) -> list[str]:
    return [row.action for row in rows(session, "item", item.id)]


def print_download(session, who, items, *, fmt="pdf", **options) -> printing.Printout:
    return printing.print_labels(
        session,
        actor=who,
        template_name=options.pop("template", "cryovial"),
        item_codes=[item.code for item in items],
        fmt=fmt,
        **options,
    )


# -- printing to a network printer ------------------------------------------------------------


def test_the_printer_receives_exactly_the_zpl_rendered_and_the_job_is_recorded(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        batch = tubes(session, tech, 3)
        template = printing.label_templates()["cryovial"]
        expected = render(
            template,
            [content.item_content(session, actor=tech, item=t, template=template) for t in batch],
            "zpl",
        )
        with listening_printer() as (port, received, thread):
            use_printer(app, port)
            printout = printing.print_labels(
                session,
                actor=tech,
                template_name="cryovial",
                item_codes=[t.code for t in batch],
                destination="Bench Zebra",
            )
        assert not thread.is_alive()
        assert bytes(received) == expected == printout.data
        text = expected.decode()
        assert text.startswith("^XA") and text.rstrip().endswith("^XZ")
        assert text.count("^XA") == 3
        for tube in batch:
            assert tube.code in text
        session.expire_all()
        job = session.get(PrintJob, printout.job.id)
        assert (job.status, job.destination, job.printer_host, job.printer_port) == (
            PrintStatus.SENT,
            "Bench Zebra",
            "127.0.0.1",
            port,
        )
        assert (job.format.value, job.label_count, job.reprint, job.template) == (
            "zpl",
            3,
            False,
            "cryovial",
        )
        assert [(lb.item_id, lb.number, lb.total) for lb in job.labels] == [
            (tube.id, n, 3) for n, tube in enumerate(batch, start=1)
        ]
        for tube in batch:
            refreshed = session.get(Item, tube.id)
            assert refreshed.label_printed_at is not None
            assert refreshed.label_verified_at is None
            assert "print_label" in audit_actions(session, tube)
        (created,) = rows(session, "print_job", job.id)
        assert created.action == "create" and created.user_id == tech.id


def test_an_unreachable_printer_gives_a_clear_error_and_records_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        port = closed_port()
        use_printer(app, port)
        audit_rows = session.scalar(select(func.count()).select_from(AuditEntry))
        with pytest.raises(printing.PrinterUnreachable) as refused:
            printing.print_labels(
                session,
                actor=tech,
                template_name="cryovial",
                item_codes=[tube.code],
                destination="Bench Zebra",
            )
        assert refused.value.status_code == 503
        message = refused.value.message
        assert "Bench Zebra" in message and f"127.0.0.1:{port}" in message
        assert "Nothing was printed or recorded" in message
        assert "Traceback" not in message
        session.expire_all()
        assert jobs(session) == 0
        assert session.scalar(select(func.count()).select_from(PrintedLabel)) == 0
        assert session.get(Item, tube.id).label_printed_at is None
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == audit_rows


def test_a_printer_that_does_not_answer_times_out(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        # A documentation-only address (RFC 5737): never answers; refused or timed out.
        use_printer(app, 9100, host="192.0.2.1")
        app.config["LIMS"]["labels"]["timeout_seconds"] = 0.3
        with pytest.raises(printing.PrinterUnreachable, match=r"192\.0\.2\.1:9100"):
            printing.print_labels(
                session,
                actor=tech,
                template_name="cryovial",
                item_codes=[tube.code],
                destination="Bench Zebra",
            )
        session.expire_all()
        assert jobs(session) == 0
        assert session.get(Item, tube.id).label_printed_at is None


def test_send_zpl_refuses_a_closed_port():
    with pytest.raises(printing.PrinterUnreachable, match="could not be reached"):
        printing.send_zpl("127.0.0.1", closed_port(), b"^XA^XZ", 1.0)


def test_a_printer_with_another_resolution_or_stock_is_refused(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        use_printer(app, 9100, dpi=203)
        with pytest.raises(ValidationError, match="made for 300 dpi"):
            printing.print_labels(
                session,
                actor=tech,
                template_name="cryovial",
                item_codes=[tube.code],
                destination="Bench Zebra",
            )
        use_printer(app, 9100, kinds=["product_bag"])
        with pytest.raises(ValidationError, match="not cryovial labels"):
            printing.print_labels(
                session,
                actor=tech,
                template_name="cryovial",
                item_codes=[tube.code],
                destination="Bench Zebra",
            )
        with pytest.raises(ValidationError, match="No printer 'Elsewhere'"):
            printing.print_labels(
                session,
                actor=tech,
                template_name="cryovial",
                item_codes=[tube.code],
                destination="Elsewhere",
            )
        assert jobs(session) == 0


# -- downloads, roles, sites ------------------------------------------------------------------


def test_a_download_is_recorded_and_marks_the_items_printed(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        batch = tubes(session, tech, 2)
        printout = print_download(session, tech, batch)
        assert printout.data.startswith(b"%PDF")
        assert printout.mimetype == "application/pdf"
        job = session.get(PrintJob, printout.job.id)
        assert (job.status, job.destination, job.printer_host) == (
            PrintStatus.DOWNLOADED,
            "download",
            None,
        )
        assert all(session.get(Item, t.id).label_printed_at for t in batch)


def test_researchers_and_other_sites_do_not_print(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        for person in ("researcher", "elsewhere"):
            with pytest.raises(Forbidden):
                print_download(session, actor(session, people[person]), [tube])
            session.rollback()
        assert jobs(session) == 0
        assert session.get(Item, tube.id).label_printed_at is None


def test_a_template_of_another_kind_is_refused(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        with pytest.raises(ValidationError, match="does not fit"):
            print_download(session, tech, [tube], template="product_bag")
        with pytest.raises(ValidationError, match="No label template 'nope'"):
            print_download(session, tech, [tube], template="nope")
        assert jobs(session) == 0


# -- reprint ------------------------------------------------------------------------------------


def test_a_reprint_needs_a_reason_says_reprint_is_audited_and_needs_a_new_scan_back(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        first = print_download(session, tech, [tube], fmt="zpl")
        assert b"REPRINT" not in first.data
        verify_label(session, actor=tech, scan=tube.code)
        printed_at = session.get(Item, tube.id).label_printed_at
        with pytest.raises(ValidationError, match="Already printed"):
            print_download(session, tech, [tube], fmt="zpl")
        with pytest.raises(ValidationError, match="reason for the reprint"):
            print_download(session, tech, [tube], fmt="zpl", reprint=True, reason="  ")
        assert jobs(session) == 1
        again = print_download(
            session, tech, [tube], fmt="zpl", reprint=True, reason="label smudged by ethanol"
        )
        assert b"REPRINT" in again.data
        session.expire_all()
        job = session.get(PrintJob, again.job.id)
        assert job.reprint and job.reason == "label smudged by ethanol"
        item = session.get(Item, tube.id)
        assert item.label_printed_at == printed_at  # the first print fixed the identifier
        assert item.label_verified_at is None
        reprints = rows(session, "item", tube.id, "reprint_label")
        assert reprints and all(r.reason == "label smudged by ethanol" for r in reprints)
        assert any(r.field == "label_verified_at" for r in reprints)
        assert rows(session, "print_job", job.id)[0].reason == "label smudged by ethanol"


def test_reprint_of_something_never_printed_is_refused(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        with pytest.raises(ValidationError, match="print, not reprint"):
            print_download(session, tech, [tube], reprint=True, reason="why not")
        assert jobs(session) == 0


def test_box_and_shipment_labels_are_recorded_and_reprinted_with_a_reason(app, people):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        freezer(session, manager)
        storage_box = box(session, manager, code="BOX-L1")
        tech = actor(session, people["tech"])
        printout = printing.print_labels(
            session, actor=tech, template_name="box", box_code="box-l1", fmt="zpl"
        )
        assert b"BOX-L1" in printout.data
        assert printout.job.labels[0].box_id == storage_box.id
        with pytest.raises(ValidationError, match="Already printed: BOX-L1"):
            printing.print_labels(session, actor=tech, template_name="box", box_code="BOX-L1")
        reprint = printing.print_labels(
            session,
            actor=tech,
            template_name="box",
            box_code="BOX-L1",
            reprint=True,
            reason="box relabelled after thaw",
        )
        assert reprint.job.reprint
        assert rows(session, "storage_box", storage_box.id, "reprint_label")[0].reason == (
            "box relabelled after thaw"
        )


# -- scan-back ----------------------------------------------------------------------------------


def test_scan_back_sets_label_verified_at_with_an_audit_row(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        first, second = tubes(session, tech, 2)
        with pytest.raises(ValidationError, match="print it first"):
            verify_label(session, actor=tech, scan=first.code)
        print_download(session, tech, [first, second])
        with pytest.raises(Conflict, match=f"WRONG LABEL: the label scanned is {second.code}"):
            verify_label(session, actor=tech, scan=second.code, expected=first.code)
        session.rollback()
        assert session.get(Item, second.id).label_verified_at is None
        with pytest.raises(Forbidden):
            verify_label(session, actor=actor(session, people["researcher"]), scan=first.code)
        session.rollback()
        item = verify_label(session, actor=tech, scan=first.code.lower(), expected=first.code)
        assert item.label_verified_at is not None
        (row,) = rows(session, "item", first.id, "verify_label")
        assert row.field == "label_verified_at" and row.user_id == tech.id
        # A second scan of a confirmed label changes nothing and writes nothing.
        verify_label(session, actor=tech, scan=first.code)
        assert len(rows(session, "item", first.id, "verify_label")) == 1


def test_a_printed_tube_is_stored_only_after_its_label_is_scanned_back(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        printed, never_printed = tubes(session, tech, 2)
        print_download(session, tech, [printed])
        place = Move(location="-80 freezer 1")
        with pytest.raises(InvalidTransition, match=GUARD):
            perform_action(session, actor=tech, code=printed.code, action=Action.STORE, move=place)
        session.rollback()
        assert session.get(Item, printed.id).state.value == "registered"
        # Material never labelled by the LIMS keeps its workflow.
        perform_action(session, actor=tech, code=never_printed.code, action="store", move=place)
        verify_label(session, actor=tech, scan=printed.code)
        event = perform_action(
            session, actor=tech, code=printed.code, action=Action.STORE, move=place
        )
        assert event.to_state == "stored"


def test_a_collection_is_shipped_only_after_its_label_is_scanned_back(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=7)
        collection = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
        )
        # The bag label names the patient: printed at the treating site, identity view audited.
        bag_label = print_download(session, tech, [collection], template="product_bag", fmt="zpl")
        assert collection.code in bag_label.data.decode()
        courier = Move(custodian="courier")
        with pytest.raises(InvalidTransition, match=GUARD):
            perform_action(session, actor=tech, code=collection.code, action="ship", move=courier)
        session.rollback()
        verify_label(session, actor=tech, scan=f"={collection.code}00")
        event = perform_action(
            session, actor=tech, code=collection.code, action=Action.SHIP, move=courier
        )
        assert event.to_state == "in_transit"


def test_a_bag_is_released_only_after_its_label_is_scanned_back(app, people):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        bag = quarantined_lot(app, session, people, new_episode(session, maker)).bags[0]
        # Labelled at the manufacturing site (the guard reads only the item's label times).
        bag.label_printed_at = lims_db.utcnow()
        session.commit()

        def release():
            return perform_action(
                session,
                actor=qp,
                code=bag.code,
                action=Action.RELEASE,
                password=PASSWORD,
                witness=second_person(session, people["maker"]),
            )

        with pytest.raises(InvalidTransition, match=GUARD):
            release()
        session.rollback()
        verify_label(session, actor=maker, scan=bag.code)
        assert release().to_state == "released"


def test_which_steps_wait_is_configured_per_kind(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        print_download(session, tech, [tube])
        app.config["LIMS"]["labels"]["verify_before"]["aliquot"] = []
        event = perform_action(
            session, actor=tech, code=tube.code, action="store", move=Move(location="rack 1")
        )
        assert event.to_state == "stored"


# -- no patient identity on research labels -----------------------------------------------------


def test_no_research_label_contains_patient_identifiers(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        batch = tubes(session, tech, 2)
        patient = batch[0].episode.patient
        identity = reveal_identity(session, actor=tech, pseudonym=patient.pseudonym)
        secrets = [
            identity.name,
            identity.identifier,
            identity.identifier.replace("-", ""),
            identity.birth_date.isoformat(),
            identity.birth_date.strftime("%d-%m-%Y"),
            identity.birth_date.strftime("%d.%m.%Y"),
        ]
        research = [t for t in printing.label_templates().values() if t.research]
        assert research, "the project ships at least one research template"
        for template in research:
            if not template.labels_item_kind("aliquot"):
                continue
            for item in batch:
                values = content.item_content(session, actor=tech, item=item, template=template)
                text = " ".join(values.values.values()) + " " + values.barcode_data
                assert not [s for s in secrets if s.lower() in text.lower()], template.name
                assert item.episode.coi not in text
            zpl = print_download(session, tech, batch, template=template.name, fmt="zpl")
            printed = zpl.data.decode()
            assert not [s for s in secrets if s.lower() in printed.lower()], template.name
            assert patient.pseudonym in printed  # the pseudonym is what tells tubes apart


def test_a_research_template_that_would_name_the_patient_is_refused(app, people, monkeypatch):
    """Defence in depth: even a template that slipped past the loader prints no identity."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=11)
        collection = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=100, collected_at=lims_db.utcnow()
        )
        shipped = printing.label_templates()
        leaky = dataclasses.replace(shipped["product_bag"], name="leaky", research=True)
        monkeypatch.setattr(printing, "label_templates", lambda: shipped | {"leaky": leaky})
        with pytest.raises(Forbidden, match="would print who the patient is"):
            print_download(session, tech, [collection], template="leaky", fmt="zpl")
        session.rollback()
        assert jobs(session) == 0
        assert session.get(Item, collection.id).label_printed_at is None


def test_a_printer_named_beyond_what_a_job_records_is_refused_before_sending(app, people):
    with app.app_context():
        session = lims_db.session()
        app.config["LIMS"]["labels"]["printers"] = {
            "RH": [{"name": "Z" * 81, "host": "127.0.0.1", "port": closed_port(), "dpi": 300}]
        }
        with pytest.raises(ValidationError, match="at most 80 characters"):
            printing.printers_of("RH")
        assert jobs(session) == 0


def test_aliquots_are_made_where_the_sample_is(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        with pytest.raises(Forbidden, match="aliquoted where it is"):
            production.aliquot(
                session,
                actor=actor(session, people["elsewhere"]),
                parent_code=tube.code,
                count=2,
                quantity_each=0.1,
                unit="mL",
                material_type="plasma",
            )
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Item).where(
            Item.parent_id == tube.id)) == 0


def test_a_birth_date_inside_a_longer_date_is_not_taken_for_the_patient(app, people):
    """Whole tokens only: born 26 April 2012 (26-04-12) and sampled on 2026-04-12."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        (tube,) = tubes(session, tech, 1)
        patient = tube.episode.patient
        marks = printing._identity_marks(patient)
        label = {"collected": "2026-04-12", "code": tube.code}
        birth = marks[1]  # the ISO birth date the vault holds, e.g. 1961-01-01
        year, month, day = birth.split("-")
        label["collected"] = f"20{day}-{month}-{year[2:]}"  # holds dd-mm-yy inside it
        printing.check_no_identity(
            printing.label_templates()["cryovial"], [tube], [{"values": label}]
        )
        with pytest.raises(Forbidden, match="would print who the patient is"):
            printing.check_no_identity(
                printing.label_templates()["cryovial"], [tube], [{"values": {"x": birth}}]
            )


def test_a_misspelt_step_in_verify_before_stops_the_start(tmp_path):
    from lims import create_app
    from lims.errors import ConfigurationError

    settings = {
        "app": {"instance_path": str(tmp_path)},
        "labels": {"verify_before": {"aliquot": ["store", "stor"]}},
    }
    with pytest.raises(ConfigurationError, match="aliquot: stor is not a step of aliquot"):
        create_app(overrides=settings)
