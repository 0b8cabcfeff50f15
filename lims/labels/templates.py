"""Label templates: one TOML file per label stock, read and checked before anything prints.

A template says how big the label is, at which printer resolution, where its barcode and its
text fields go and which content each field shows. The project ships its templates in the
top-level ``labels/`` folder; a site adds or replaces templates in a folder of its own
(``[labels] extra_folder``). A malformed template is refused as a whole with a
:class:`TemplateError` naming the file and the field, and the content rules of DOMAIN.md §9 are
enforced here, once: a research or cryovial template can never name a patient identifier.

Pure: no Flask, no database (``templates_folder`` reads the app's configuration when called).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lims.labels.keys import (
    BARCODE_KEYS,
    CONTENT_KEYS,
    FIXED_TEXT,
    ITEM_KINDS,
    NOT_ON_RESEARCH_LABELS,
    PATIENT_KEYS,
    SUBJECTS,
)

#: The project's own templates: the top-level ``labels/`` folder beside the ``lims`` package.
PROJECT_FOLDER = Path(__file__).resolve().parents[2] / "labels"
MM_PER_PT = 25.4 / 72
DPIS = (203, 300)
SYMBOLOGIES = ("code128", "datamatrix")


_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_TOP_KEYS = {
    "name": str,
    "description": str,
    "kind": str,
    "research": bool,
    "width_mm": float,
    "height_mm": float,
    "dpi": int,
    "barcode": dict,
    "field": list,
    "reprint": dict,
}
_REQUIRED_TOP = ("name", "kind", "research", "width_mm", "height_mm", "dpi", "barcode", "field")
_BARCODE_KEYS = {
    "symbology": str,
    "field": str,
    "x_mm": float,
    "y_mm": float,
    "module_mm": float,
    "height_mm": float,
}
_FIELD_KEYS = {
    "name": str,
    "x_mm": float,
    "y_mm": float,
    "size_pt": float,
    "bold": bool,
    "max_width_mm": float,
    "prefix": str,
    "text": str,
}
_REPRINT_KEYS = {"x_mm": float, "y_mm": float, "size_pt": float}


class TemplateError(ValueError):
    """A malformed label template: which file, which field, and what is wrong with it."""

    def __init__(self, path: Path | str, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.path = Path(path)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class BarcodeSpec:
    symbology: str
    #: The content key it encodes (``code`` or ``coi``).
    field: str
    #: Top-left corner of the symbol itself; its quiet zone lies outside, on the label.
    x_mm: float
    y_mm: float
    module_mm: float
    #: Bar height (Code 128 only; a Data Matrix is as high as it is wide).
    height_mm: float | None = None


@dataclass(frozen=True)
class FieldSpec:
    #: A content key, or ``text`` for the fixed wording in ``text``.
    name: str
    #: Top-left corner of the text.
    x_mm: float
    y_mm: float
    size_pt: float
    bold: bool = False
    #: Longer text is made smaller, then (unless it is an identifier) cut with "…".
    max_width_mm: float | None = None
    prefix: str = ""
    text: str = ""


@dataclass(frozen=True)
class ReprintSpec:
    """Where the word REPRINT goes on a reprinted label."""

    x_mm: float
    y_mm: float
    size_pt: float


@dataclass(frozen=True)
class LabelTemplate:
    name: str
    description: str
    kind: str
    #: True: a research label, which may never carry patient identifiers.
    research: bool
    width_mm: float
    height_mm: float
    dpi: int
    barcode: BarcodeSpec
    fields: tuple[FieldSpec, ...]
    reprint: ReprintSpec
    path: Path

    @property
    def subject(self) -> str:
        """What the label is stuck on: ``item``, ``box`` or ``shipment``."""
        return SUBJECTS[self.kind]

    @property
    def content_keys(self) -> frozenset[str]:
        """Every content key the label shows or encodes."""
        names = {f.name for f in self.fields if f.name != FIXED_TEXT}
        return frozenset(names | {self.barcode.field})

    @property
    def patient_keys(self) -> frozenset[str]:
        """The patient identifiers this label prints (empty for research and vial labels)."""
        return self.content_keys & PATIENT_KEYS

    def labels_item_kind(self, item_kind: str) -> bool:
        """Whether the template is for items of this kind (``aliquot``, ``product_bag``...)."""
        return item_kind in ITEM_KINDS.get(self.kind, ())


# -- reading ---------------------------------------------------------------------------------


def _value(path: Path, where: str, value: Any, expected: type) -> Any:
    """The value if it has the expected TOML type (an integer is a float too; a bool is not)."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise TemplateError(path, where, f"must be a finite number, not {value}")
    if isinstance(value, bool) and expected is not bool:
        raise TemplateError(path, where, f"must be {_type_name(expected)}, not true/false")
    if not isinstance(value, expected):
        raise TemplateError(
            path, where, f"must be {_type_name(expected)}, not {_type_name(type(value))}"
        )
    return value


def _type_name(kind: type) -> str:
    return {
        str: "text",
        float: "a number",
        int: "a whole number",
        bool: "true or false",
        dict: "a table",
        list: "a list",
    }.get(kind, kind.__name__)


def _table(
    path: Path, where: str, raw: dict[str, Any], keys: dict[str, type], required: tuple[str, ...]
) -> dict[str, Any]:
    """The table's values, typed; unknown and missing keys refused by name."""
    for key in raw:
        if key not in keys:
            raise TemplateError(
                path, f"{where}{key}", f"unknown key (allowed: {', '.join(sorted(keys))})"
            )
    for key in required:
        if key not in raw:
            raise TemplateError(path, f"{where}{key}", "missing")
    return {key: _value(path, f"{where}{key}", value, keys[key]) for key, value in raw.items()}


def _positive(path: Path, where: str, value: float) -> None:
    if value <= 0:
        raise TemplateError(path, where, f"must be more than 0, not {value:g}")


def _inside(path: Path, where: str, x: float, y: float, w: float, h: float, t: dict) -> None:
    """Refuse a box (mm, from the label's top-left corner) that is not all on the label."""
    if x < 0 or y < 0 or x + w > t["width_mm"] + 1e-9 or y + h > t["height_mm"] + 1e-9:
        raise TemplateError(
            path,
            where,
            f"lies outside the label area ({t['width_mm']:g} × {t['height_mm']:g} mm): "
            f"x {x:g}–{x + w:g} mm, y {y:g}–{y + h:g} mm",
        )


def _barcode(path: Path, raw: dict[str, Any], top: dict[str, Any]) -> BarcodeSpec:
    values = _table(
        path, "barcode.", raw, _BARCODE_KEYS, ("symbology", "field", "x_mm", "y_mm", "module_mm")
    )
    symbology = values["symbology"]
    if symbology not in SYMBOLOGIES:
        raise TemplateError(
            path, "barcode.symbology", f"unknown symbology '{symbology}' (code128 or datamatrix)"
        )
    subject = SUBJECTS[top["kind"]]
    if values["field"] not in BARCODE_KEYS[subject]:
        raise TemplateError(
            path,
            "barcode.field",
            f"unknown content key '{values['field']}' for a {top['kind']} barcode "
            f"(allowed: {', '.join(BARCODE_KEYS[subject])})",
        )
    module = values["module_mm"]
    _positive(path, "barcode.module_mm", module)
    dots = round(module * top["dpi"] / 25.4)
    if not 1 <= dots <= 10:
        raise TemplateError(
            path,
            "barcode.module_mm",
            f"{module:g} mm is {dots} printer dots at {top['dpi']} dpi; a module is 1 to 10 dots",
        )
    x, y = values["x_mm"], values["y_mm"]
    if symbology == "code128":
        if "height_mm" not in values:
            raise TemplateError(path, "barcode.height_mm", "missing (the bar height of Code 128)")
        _positive(path, "barcode.height_mm", values["height_mm"])
        # Code 128 needs a quiet zone of 10 modules either side; the right one depends on the
        # data and is checked when the label is drawn.
        _inside(path, "barcode", x - 10 * module, y, 10 * module, values["height_mm"], top)
    else:
        if "height_mm" in values:
            raise TemplateError(
                path, "barcode.height_mm", "a Data Matrix is sized by its data and module_mm"
            )
        # The smallest symbol (10 x 10 modules) and its quiet zone of one module must fit.
        _inside(path, "barcode", x - module, y - module, 12 * module, 12 * module, top)
    return BarcodeSpec(
        symbology=symbology,
        field=values["field"],
        x_mm=x,
        y_mm=y,
        module_mm=module,
        height_mm=values.get("height_mm"),
    )


def _field(path: Path, index: int, raw: Any, top: dict[str, Any]) -> FieldSpec:
    where = f"field[{index}]"
    if not isinstance(raw, dict):
        raise TemplateError(path, where, "must be a table ([[field]])")
    values = _table(path, f"{where}.", raw, _FIELD_KEYS, ("name", "x_mm", "y_mm", "size_pt"))
    name = values["name"]
    subject = SUBJECTS[top["kind"]]
    if name == FIXED_TEXT:
        if not values.get("text", "").strip():
            raise TemplateError(path, f"{where}.text", "missing (a 'text' field prints it)")
    elif name not in CONTENT_KEYS[subject]:
        raise TemplateError(
            path,
            f"{where}.name",
            f"unknown content key '{name}' for a {top['kind']} label "
            f"(allowed: {', '.join(sorted(CONTENT_KEYS[subject]))}, text)",
        )
    elif "text" in values:
        raise TemplateError(path, f"{where}.text", "only a field named 'text' has fixed text")
    _positive(path, f"{where}.size_pt", values["size_pt"])
    width = values.get("max_width_mm", 0.0)
    if "max_width_mm" in values:
        _positive(path, f"{where}.max_width_mm", width)
    height = values["size_pt"] * MM_PER_PT
    _inside(path, where, values["x_mm"], values["y_mm"], width, height, top)
    return FieldSpec(**values)


def _reprint(path: Path, raw: dict[str, Any] | None, top: dict[str, Any]) -> ReprintSpec:
    if raw is None:  # default: top right corner, as large as the label allows
        size = max(5.0, min(14.0, top["height_mm"] / 6 / MM_PER_PT))
        width = size * MM_PER_PT * 4.6  # "REPRINT" in a bold sans-serif
        return ReprintSpec(max(0.0, top["width_mm"] - width - 1), 0.8, size)
    values = _table(path, "reprint.", raw, _REPRINT_KEYS, ("x_mm", "y_mm", "size_pt"))
    _positive(path, "reprint.size_pt", values["size_pt"])
    _inside(path, "reprint", values["x_mm"], values["y_mm"], 0, values["size_pt"] * MM_PER_PT, top)
    return ReprintSpec(**values)


def parse_template(path: Path, raw: dict[str, Any]) -> LabelTemplate:
    """Check one template's TOML table and make it a :class:`LabelTemplate`."""
    top = _table(path, "", raw, _TOP_KEYS, _REQUIRED_TOP)
    if not _NAME.fullmatch(top["name"]):
        raise TemplateError(
            path, "name", "1 to 40 lower-case letters, digits, '-' or '_', e.g. cryovial_44x19"
        )
    if top["kind"] not in SUBJECTS:
        raise TemplateError(
            path, "kind", f"unknown kind '{top['kind']}' (allowed: {', '.join(SUBJECTS)})"
        )
    if top["dpi"] not in DPIS:
        raise TemplateError(
            path, "dpi", f"must be 203 or 300 (printer dots per inch), not {top['dpi']}"
        )
    for key in ("width_mm", "height_mm"):
        _positive(path, key, top[key])
    barcode = _barcode(path, top["barcode"], top)
    if not top["field"]:
        raise TemplateError(path, "field", "a label needs at least one [[field]]")
    fields = tuple(_field(path, i, raw_field, top) for i, raw_field in enumerate(top["field"]))
    if barcode.field not in {f.name for f in fields}:
        raise TemplateError(
            path,
            "barcode.field",
            f"the barcode's content '{barcode.field}' must also be printed as text "
            "(a [[field]] with that name): a person must be able to read what the code says",
        )
    template = LabelTemplate(
        name=top["name"],
        description=top.get("description", ""),
        kind=top["kind"],
        research=top["research"],
        width_mm=top["width_mm"],
        height_mm=top["height_mm"],
        dpi=top["dpi"],
        barcode=barcode,
        fields=fields,
        reprint=_reprint(path, top.get("reprint"), top),
        path=path,
    )
    _check_content_rules(template)
    return template


def _check_content_rules(template: LabelTemplate) -> None:
    """Who the patient is goes on a product bag's label only (DOMAIN.md §9: what the bedside
    check needs), never on a research label; nor does the Chain of Identity go on a research
    label or on anything that labels aliquots (cryovials, tubes), whatever the kind is called."""
    identity_allowed = template.kind == "product_bag" and not template.research
    for_aliquots = "aliquot" in ITEM_KINDS.get(template.kind, ())
    what = "a research label" if template.research else f"a {template.kind} label"
    named = [(f"field[{n}].name", spec.name) for n, spec in enumerate(template.fields)]
    named.append(("barcode.field", template.barcode.field))
    for where, name in named:
        refused = (name in PATIENT_KEYS and not identity_allowed) or (
            name in NOT_ON_RESEARCH_LABELS and (template.research or for_aliquots)
        )
        if refused:
            raise TemplateError(
                template.path, where, f"'{name}' identifies the patient and may never be on {what}"
            )


def read_template(path: Path) -> LabelTemplate:
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(path, "(file)", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise TemplateError(path, "(file)", "is not UTF-8 text: save it as UTF-8") from None
    except OSError as exc:
        raise TemplateError(path, "(file)", f"cannot be read: {exc.strerror}") from None
    return parse_template(path, raw)


def load_templates(folders: list[Path]) -> dict[str, LabelTemplate]:
    """Every template of the folders, by name; a later folder adds or replaces by name."""
    templates: dict[str, LabelTemplate] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise TemplateError(folder, "(folder)", "label template folder does not exist")
        seen: dict[str, Path] = {}
        for path in sorted(folder.glob("*.toml")):
            template = read_template(path)
            if template.name in seen:
                raise TemplateError(
                    path, "name", f"'{template.name}' is the name of {seen[template.name]} too"
                )
            seen[template.name] = path
            templates[template.name] = template
    return dict(sorted(templates.items()))


def templates_folder() -> list[Path]:
    """The folders to read, in order: the project's ``labels/``, then the site's own folder."""
    from flask import current_app

    folders = [PROJECT_FOLDER]
    extra = current_app.config["LIMS"]["labels"]["extra_folder"].strip()
    if extra:
        folders.append(Path(extra))
    return folders


#: The same, under the plural name.
templates_folders = templates_folder


def site_templates() -> dict[str, LabelTemplate]:
    """The templates this installation prints with (project's, then the site's folder)."""
    return load_templates(templates_folder())


def template_named(name: str, templates: dict[str, LabelTemplate] | None = None) -> LabelTemplate:
    """One template by name; :class:`lims.errors.NotFound` names the ones there are."""
    from lims.errors import NotFound

    templates = site_templates() if templates is None else templates
    try:
        return templates[name]
    except KeyError:
        raise NotFound(
            f"No label template '{name}' (there are: {', '.join(templates) or 'none'}).",
            field="template",
        ) from None


def templates_for(
    templates: dict[str, LabelTemplate], subject: str, item_kind: str | None = None
) -> list[LabelTemplate]:
    """The templates for an item of ``item_kind``, a ``box`` or a ``shipment``."""
    return [
        t
        for t in templates.values()
        if t.subject == subject and (item_kind is None or t.labels_item_kind(item_kind))
    ]
