"""Box geometry, position names and temperature suitability."""

import pytest

from lims.storage.domain import (
    BOX_TYPES,
    Geometry,
    Naming,
    PositionError,
    TemperatureClass,
    suitable,
)


@pytest.mark.parametrize(
    ("box", "index", "name"),
    [("9x9", 1, "A1"), ("9x9", 9, "A9"), ("9x9", 10, "B1"), ("9x9", 81, "I9"),
     ("10x10", 100, "J10"), ("8x12", 12, "A12"), ("8x12", 13, "B1"), ("8x12", 96, "H12"),
     ("cassette-5", 3, "3")],
)  # fmt: skip
def test_positions_are_named_and_read_back(box, index, name):
    geometry = BOX_TYPES[box]
    assert geometry.name(index) == name
    assert geometry.index(name) == index


@pytest.mark.parametrize("written", ["A01", "a1", " A1 ", "1"])
def test_a_position_may_be_written_as_scanners_and_people_do(written):
    assert BOX_TYPES["8x12"].index(written) == 1


@pytest.mark.parametrize("written", ["I1", "A13", "A0", "97", "0", "", "Z", "A1B", "-1"])
def test_a_position_outside_the_box_is_refused(written):
    with pytest.raises(PositionError):
        BOX_TYPES["8x12"].index(written)


def test_a_numbered_box_refuses_grid_names_and_counts_row_by_row():
    cassette = Geometry(2, 3, Naming.NUMBERED)
    assert cassette.names() == ["1", "2", "3", "4", "5", "6"]
    with pytest.raises(PositionError):
        cassette.index("A1")


def test_capacity_and_impossible_geometries():
    assert [BOX_TYPES[b].capacity for b in ("9x9", "10x10", "8x12")] == [81, 100, 96]
    with pytest.raises(ValueError, match="1 to 26 rows"):
        Geometry(27, 1)
    with pytest.raises(PositionError, match="outside"):
        BOX_TYPES["9x9"].name(82)


@pytest.mark.parametrize(
    ("material", "unit", "allowed"),
    [("car_t_product", TemperatureClass.LN2_VAPOUR, True),
     ("car_t_product", TemperatureClass.MINUS_80, False),
     ("pbmc", TemperatureClass.MINUS_150, True), ("pbmc", TemperatureClass.MINUS_80, False),
     ("plasma", TemperatureClass.LN2_VAPOUR, True), ("plasma", TemperatureClass.MINUS_80, True),
     ("plasma", TemperatureClass.MINUS_20, False), ("dna", TemperatureClass.MINUS_20, True),
     ("whole_blood", TemperatureClass.ROOM, False), ("whole_blood", TemperatureClass.FRIDGE, True)],
)  # fmt: skip
def test_material_is_kept_only_as_cold_as_it_needs_or_colder(material, unit, allowed):
    reason = suitable(material, unit)
    assert (reason is None) is allowed
    if not allowed:
        assert unit.label in reason
