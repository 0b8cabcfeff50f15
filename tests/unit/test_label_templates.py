"""Label templates as data: the shipped ones load, a malformed one names its file and field,
research and cryovial labels can never name a patient identifier, a site adds and overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from lims.errors import ValidationError
from lims.labels import layout, templates
from lims.labels.templates import PROJECT_FOLDER, TemplateError, load_templates
from lims.labels.zpl import field_data

SHIPPED = {"cryovial", "product_bag", "box", "shipment"}


def shipped_raw(name: str) -> dict[str, Any]:
    with (PROJECT_FOLDER / f"{name}.toml").open("rb") as handle:
        return tomllib.load(handle)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def to_toml(raw: dict[str, Any]) -> str:
    """Enough of a TOML writer for a template: scalars, tables, arrays of tables."""
    lines = [f"{k} = {toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict | list)]
    lines += [f"{k} = []" for k, v in raw.items() if v == []]
    for key, value in raw.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            for entry in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def write(folder: Path, raw: dict[str, Any], file: str = "label.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(to_toml(raw), encoding="utf-8")
    return path


def refused(folder: Path) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        load_templates([folder])
    return caught.value


def test_every_shipped_template_loads():
    loaded = load_templates([PROJECT_FOLDER])
    assert set(loaded) == SHIPPED
    vial, bag = loaded["cryovial"], loaded["product_bag"]
    assert (vial.kind, vial.research, vial.dpi, vial.width_mm, vial.height_mm) == (
        "cryovial", True, 300, 44.0, 19.0,
    )  # fmt: skip
    assert vial.barcode.symbology == "datamatrix" and vial.patient_keys == frozenset()
    assert bag.barcode.symbology == "code128" and bag.dpi in (203, 300)
    assert bag.patient_keys == {"patient_name", "cpr", "birth_date"}
    assert (bag.width_mm, bag.height_mm) == (100.0, 100.0)
    assert {"code", "coi", "expiry", "product_name"} <= bag.content_keys
    assert loaded["box"].subject == "box" and loaded["shipment"].subject == "shipment"
    for template in loaded.values():
        assert template.path.parent == PROJECT_FOLDER
        assert template.barcode.field in {f.name for f in template.fields}
        assert not (template.patient_keys and template.research)


def _set(raw, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        raw = raw[int(part)] if part.isdigit() else raw[part]
    if value is KeyError:
        del raw[int(last) if last.isdigit() else last]
    else:
        raw[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(
    ("change", "value", "field", "words"),
    [
        ("colour", "red", "colour", "unknown key"),
        ("dpi", KeyError, "dpi", "missing"),
        ("width_mm", "44", "width_mm", "must be a number, not text"),
        ("research", "yes", "research", "must be true or false"),
        ("field.0.size_pt", True, "field[0].size_pt", "not true/false"),
        ("field.0.colour", "red", "field[0].colour", "unknown key"),
        ("field.1.y_mm", KeyError, "field[1].y_mm", "missing"),
        ("field.1.x_mm", 30.0, "field[1]", "outside the label area"),
        ("field.1.y_mm", 18.0, "field[1]", "outside the label area"),
        ("field.1.name", "pseudonyme", "field[1].name", "unknown content key 'pseudonyme'"),
        ("field.1.name", "text", "field[1].text", "missing"),
        ("barcode.symbology", "qr", "barcode.symbology", "unknown symbology 'qr'"),
        ("barcode.field", "pseudonym", "barcode.field", "unknown content key"),
        ("barcode.x_mm", 40.0, "barcode", "outside the label area"),
        ("barcode.x_mm", 0.0, "barcode", "outside the label area"),
        ("barcode.module_mm", 0.01, "barcode.module_mm", "1 to 10 dots"),
        ("barcode.height_mm", 5.0, "barcode.height_mm", "sized by its data"),
        ("dpi", 600, "dpi", "must be 203 or 300"),
        ("kind", "wristband", "kind", "unknown kind 'wristband'"),
        ("name", "Cryo Vial", "name", "lower-case"),
        ("field.0.name", "pseudonym", "barcode.field", "must also be printed as text"),
        ("field", [], "field", "at least one"),
        ("reprint.x_mm", 50.0, "reprint", "outside the label area"),
    ],
)
def test_a_malformed_template_names_its_file_and_field(tmp_path, change, value, field, words):
    raw = shipped_raw("cryovial")
    _set(raw, change, value)
    path = write(tmp_path / "site", raw)
    error = refused(tmp_path / "site")
    assert (error.path, error.field) == (path, field), str(error)
    assert words in error.message
    assert str(path) in str(error) and field in str(error)


def test_code128_without_a_bar_height_and_without_its_quiet_zone(tmp_path):
    raw = shipped_raw("box")
    del raw["barcode"]["height_mm"]
    write(tmp_path / "a", raw)
    assert refused(tmp_path / "a").field == "barcode.height_mm"
    raw = shipped_raw("box")
    raw["barcode"]["x_mm"] = 1.0  # 10 modules of 0.25 mm do not fit left of the bars
    write(tmp_path / "b", raw)
    assert (refused(tmp_path / "b").field, "outside") == ("barcode", "outside")


def test_a_file_that_is_not_toml_and_a_name_used_twice(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "broken.toml").write_text('name = "x\n', encoding="utf-8")
    error = refused(folder)
    assert error.path == folder / "broken.toml" and error.field == "(file)"
    assert "not valid TOML" in error.message
    (folder / "broken.toml").unlink()
    write(folder, shipped_raw("box"), "one.toml")
    write(folder, shipped_raw("box"), "two.toml")
    error = refused(folder)
    assert (error.path, error.field) == (folder / "two.toml", "name")
    assert "one.toml" in error.message


def test_a_missing_folder_is_an_error_not_silence(tmp_path):
    error = refused(tmp_path / "nowhere")
    assert error.field == "(folder)" and "does not exist" in error.message


@pytest.mark.parametrize("key", ["cpr", "patient_name", "birth_date", "coi"])
def test_a_research_template_naming_a_patient_identifier_is_refused(tmp_path, key):
    raw = shipped_raw("cryovial")
    raw.update(kind="tube", research=True, name="research_tube")
    raw["field"].append({"name": key, "x_mm": 12.0, "y_mm": 16.0, "size_pt": 6.0})
    path = write(tmp_path / "site", raw)
    error = refused(tmp_path / "site")
    assert (error.path, error.field) == (path, f"field[{len(raw['field']) - 1}].name")
    assert key in error.message and "research label" in error.message


def test_a_cryovial_template_can_never_name_the_patient(tmp_path):
    raw = shipped_raw("cryovial")
    raw["research"] = False  # even when it does not call itself research
    raw["field"].append({"name": "birth_date", "x_mm": 12.0, "y_mm": 16.0, "size_pt": 6.0})
    write(tmp_path / "site", raw)
    error = refused(tmp_path / "site")
    assert "cryovial label" in error.message and "birth_date" in error.message
    raw = shipped_raw("product_bag")
    raw["research"] = True
    raw["barcode"]["field"] = "coi"
    raw["field"] = [f for f in raw["field"] if f["name"] not in templates.PATIENT_KEYS]
    write(tmp_path / "bag", raw)
    assert refused(tmp_path / "bag").field in ("barcode.field", "field[2].name")


@pytest.mark.parametrize("key", ["cpr", "patient_name", "birth_date", "coi"])
def test_a_tube_template_for_aliquots_is_refused_identifiers_even_if_not_research(tmp_path, key):
    raw = shipped_raw("cryovial")
    raw.update(kind="tube", research=False, name="site_tube")
    raw["field"].append({"name": key, "x_mm": 12.0, "y_mm": 16.0, "size_pt": 6.0})
    write(tmp_path / "site", raw)
    error = refused(tmp_path / "site")
    assert key in error.message and "tube label" in error.message


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_size_or_place_that_is_not_a_finite_number_is_refused(tmp_path, value):
    text = to_toml(shipped_raw("cryovial")).replace("width_mm = 44", f"width_mm = {value}", 1)
    assert f"width_mm = {value}" in text
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "label.toml").write_text(text)
    error = refused(tmp_path / "site")
    assert error.field == "width_mm" and "finite" in error.message


def test_a_template_that_is_not_utf8_is_named_not_a_crash(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "label.toml").write_bytes('name = "frys\xf8r"\n'.encode("latin-1"))
    error = refused(tmp_path / "site")
    assert error.field == "(file)" and "UTF-8" in error.message


def test_the_same_identifiers_on_a_bag_label_are_fine():
    bag = load_templates([PROJECT_FOLDER])["product_bag"]
    assert not bag.research and bag.patient_keys


def test_a_site_folder_adds_and_overrides_templates(tmp_path):
    site = tmp_path / "site-labels"
    ours = shipped_raw("cryovial")
    ours["description"] = "Our own cryovial stock"
    ours["width_mm"] = 50.0
    write(site, ours, "our_cryovial.toml")
    extra = shipped_raw("box")
    extra.update(name="canister", description="Canister tag")
    write(site, extra, "canister.toml")
    loaded = load_templates([PROJECT_FOLDER, site])
    assert set(loaded) == SHIPPED | {"canister"}
    assert loaded["cryovial"].description == "Our own cryovial stock"
    assert loaded["cryovial"].width_mm == 50.0 and loaded["cryovial"].path.parent == site
    assert loaded["canister"].kind == "box"
    assert loaded["product_bag"].path.parent == PROJECT_FOLDER
    # The project's own folder alone is unchanged.
    assert load_templates([PROJECT_FOLDER])["cryovial"].width_mm == 44.0


def test_templates_folder_reads_the_configuration(tmp_path):
    app = Flask("labels-config")
    app.config["LIMS"] = {"labels": {"extra_folder": ""}}
    with app.app_context():
        assert templates.templates_folder() == [PROJECT_FOLDER]
        assert set(templates.site_templates()) == SHIPPED
        app.config["LIMS"]["labels"]["extra_folder"] = str(tmp_path)
        assert templates.templates_folder() == [PROJECT_FOLDER, tmp_path]
        write(tmp_path, {**shipped_raw("box"), "name": "rack"}, "rack.toml")
        assert "rack" in templates.site_templates()
        assert templates.template_named("rack").kind == "box"
        with pytest.raises(Exception, match="No label template 'nope'"):
            templates.template_named("nope")


def test_templates_for_an_item_kind():
    loaded = load_templates([PROJECT_FOLDER])
    assert [t.name for t in templates.templates_for(loaded, "item", "aliquot")] == ["cryovial"]
    bags = templates.templates_for(loaded, "item", "product_bag")
    assert [t.name for t in bags] == ["product_bag"]
    assert [t.name for t in templates.templates_for(loaded, "box")] == ["box"]


# -- layout rules that need no database --------------------------------------------------


def test_long_text_shrinks_then_is_cut_but_an_identifier_never_is():
    text, size = layout.fit("Plasma", 7, False, 30, cut=True)
    assert (text, size) == ("Plasma", 7)
    long = "Cell pellet for RNA sequencing"
    text, size = layout.fit(long, 7, False, 25, cut=True)
    assert size < 7 and layout.text_width_mm(text, size, False) <= 25
    very_long = long * 3
    text, size = layout.fit(very_long, 7, False, 25, cut=True)
    assert text.endswith("…") and size == 5.0 and len(text) < len(very_long)
    with pytest.raises(ValidationError, match="too long"):
        layout.fit("RH0000000000042" * 3, 9, True, 25, cut=False)


def test_characters_the_font_lacks_are_written_plainly():
    assert layout.printable("Søren Ærø  Åse") == "Søren Ærø Åse"
    assert layout.printable("RH\t→ AUH") in ("RH → AUH", "RH -> AUH")


def test_modules_are_whole_printer_dots():
    assert layout.snapped_module(0.25, 203) == (2 * 25.4 / 203, 2)
    assert layout.snapped_module(0.5, 300) == (6 * 25.4 / 300, 6)
    assert layout.datamatrix_modules("RH00000429")[0].count("1") > 0
    assert len(layout.datamatrix_modules("RH00000429")) == 14  # sized to the data


def test_zpl_field_data_escapes_command_characters():
    assert field_data("A^B~C_D") == "^FH^FDA_5EB_7EC_5FD^FS"
    with pytest.raises(ValidationError):
        field_data("A\nB")


def test_template_error_reads_well():
    error = TemplateError(Path("labels/x.toml"), "field[0].name", "unknown content key 'y'")
    assert str(error) == "labels/x.toml: field[0].name: unknown content key 'y'"

