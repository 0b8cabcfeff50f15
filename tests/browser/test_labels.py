"""Vial labels for an aliquoting run in Chromium: aliquot from the bench, download the batch
as PDF, decode every page's Data Matrix, then confirm one label by scanning it back."""

from __future__ import annotations

import re
import subprocess
from types import SimpleNamespace

from playwright.sync_api import expect
from sqlalchemy import select

from lims import db as lims_db
from lims.auth import services as accounts
from lims.custody import production
from lims.custody.models import Item
from tests.browser.bench import flash, log_in_as, scan
from tests.conftest import PASSWORD
from tests.integration.people import new_episode


def technician_with_a_sample(app) -> SimpleNamespace:
    with app.app_context():
        session = lims_db.session()
        accounts.create_site(
            session, actor=None, code="RH", name="Rigshospitalet", isbt_fin="W1234"
        )
        tech = accounts.create_user(
            session,
            actor=None,
            username="tina",
            full_name="Tina Tech",
            role="technician",
            site_code="RH",
            password=PASSWORD,
        )
        episode = new_episode(session, tech, n=3)
        draw = production.register_sample(
            session,
            actor=tech,
            coi=episode.coi,
            material_type="whole_blood",
            quantity=6,
            unit="mL",
            collected_at=lims_db.utcnow(),
            timepoint="M3",
        )
        return SimpleNamespace(username=tech.username, sample=draw.code)


def aliquots_of(app, code: str) -> list[str]:
    with app.app_context():
        session = lims_db.session()
        parent = session.scalar(select(Item).where(Item.code == code))
        return [c.code for c in sorted(parent.children, key=lambda c: c.aliquot_number)]


def decoded_pages(pdf: bytes, folder) -> list[str]:
    """Each page rendered at 300 dpi (as on the roll printer) and its Data Matrix decoded."""
    from PIL import Image
    from pylibdmtx import pylibdmtx

    (folder / "labels.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "300", str(folder / "labels.pdf"), str(folder / "page")],
        check=True,
    )
    texts = []
    for image_path in sorted(folder.glob("page-*.png")):
        with Image.open(image_path) as image:
            (found,) = pylibdmtx.decode(image, max_count=1)
        texts.append(found.data.decode())
    return texts


def test_vial_labels_of_an_aliquoting_run_decode_and_one_is_scanned_back(
    page, live_server, tmp_path
):
    tech = technician_with_a_sample(live_server)
    log_in_as(page, tech.username)
    page.goto("/scan")
    scan(page, tech.sample)
    page.get_by_role("link", name="Aliquot…").click()
    page.locator("#count").fill("3")
    page.locator("#quantity_each").fill("1.5")
    page.locator("#unit").select_option("mL")
    page.locator("#material_type").select_option("plasma")
    page.get_by_role("button", name="Make aliquots").click()
    flash(page, f"3 aliquots of {tech.sample} registered")
    expect(page.get_by_role("heading", level=1)).to_have_text("Labels of 3 items")
    codes = aliquots_of(live_server, tech.sample)
    assert len(codes) == 3

    page.locator("#template").select_option("cryovial")
    page.locator("#destination").select_option(label="Download PDF")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Print 3 labels").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".pdf")
    pdf = download.path().read_bytes()
    assert pdf.startswith(b"%PDF")
    assert decoded_pages(pdf, tmp_path) == codes  # one label a page, in n/N order

    # Confirm label mode: the scanned label of the second tube confirms it.
    page.goto("/scan")
    page.locator("#mode").select_option("confirm_label")
    expect(page.locator(".mode-banner")).to_contain_text("confirms the printed label")
    page.locator("#code").focus()
    scan(page, codes[1])
    flash(page, f"{codes[1]}: label confirmed.")
    expect(page.locator(".item-card")).to_contain_text("verified")
    with live_server.app_context():
        session = lims_db.session()
        verified = {
            item.code: item.label_verified_at is not None
            for item in session.scalars(select(Item).where(Item.code.in_(codes)))
        }
    assert verified == {codes[0]: False, codes[1]: True, codes[2]: False}
    # Look-up again: the other tubes still wait for their scan-back.
    page.locator("#mode").select_option("")
    expect(page.locator(".mode-banner")).to_have_count(0)
    scan(page, codes[0])
    expect(page.locator(".item-card")).to_contain_text(re.compile("label not verified"))
