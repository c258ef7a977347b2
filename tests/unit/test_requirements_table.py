"""Adding a requirement is one place: its field in `Requirements`, with its row (`FieldSpec`).

These tests walk the table, so a new requirement is covered by them without being named here: the job
parser accepts it, the range check refuses values outside its row both where a job is parsed and where a
coordinator checks it, and placement meets it by the capability its row names.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import pytest

from swarm.core.jobs import check_job
from swarm.core.placement import unmet
from swarm.devices.capabilities import Capabilities, field_specs
from swarm.devices.profiles import simulated_capabilities
from swarm.errors import InvalidSpec
from swarm.jobspec import REQUIREMENT_KEYS, parse_requirements
from swarm.messages import Heartbeat, Requirements, SubmitJob, TaskSpec

ROWS = field_specs(Requirements)
HINTS = typing.get_type_hints(Requirements)
#: A value of each type as `--require` gives it, and what it parses to.
SAMPLES: dict[type, tuple[str, Any]] = {
    int: ("3", 3),
    float: ("1.5", 1.5),
    str: ("linux", "linux"),
    bool: ("true", True),
    tuple: ("a,b", ("a", "b")),
}


def _kind(name: str) -> type:
    """A requirement's type without its None, e.g. str for `str | None`, tuple for `tuple[str, ...]`."""
    hint = HINTS[name]
    if isinstance(hint, types.UnionType):
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint


def test_every_requirement_has_a_row_and_the_settable_ones_are_what_a_job_may_ask_for() -> None:
    assert list(ROWS) == [f.name for f in dataclasses.fields(Requirements)]
    assert list(REQUIREMENT_KEYS) == [name for name, row in ROWS.items() if row.settable]
    capabilities = {f.name for f in dataclasses.fields(Capabilities)}
    for name, row in ROWS.items():
        assert (row.meets is None) == (row.capability == ""), name
        assert row.capability == "" or row.capability in capabilities, name


@pytest.mark.parametrize("name", REQUIREMENT_KEYS)
def test_the_parser_accepts_every_settable_requirement(name: str) -> None:
    row = ROWS[name]
    text, value = (row.levels[-1], row.levels[-1]) if row.levels else SAMPLES[_kind(name)]
    assert parse_requirements([f"{name}={text}"]) == Requirements(**{name: value})
    in_a_file = list(value) if isinstance(value, tuple) else value  # YAML and JSON have lists
    assert parse_requirements({name: in_a_file}) == Requirements(**{name: value})


@pytest.mark.parametrize("name", [name for name, row in ROWS.items() if row.low is not None or row.levels])
def test_values_outside_a_row_are_refused_by_the_parser_and_by_the_job_check(name: str) -> None:
    row = ROWS[name]
    bad: Any = row.low - 1 if row.low is not None else "nowhere"
    with pytest.raises(InvalidSpec, match=f"requirement {name} (must|is an unknown level)"):
        parse_requirements({name: bad})
    if not row.levels:  # an unknown level cannot even be built (the codec refuses it on arrival)
        job = SubmitJob("j", (TaskSpec("j.t", "echo", {}, requirements=Requirements(**{name: bad})),))
        with pytest.raises(InvalidSpec, match=f"requirement {name} must"):
            check_job(job)


@pytest.mark.parametrize("name", [name for name, row in ROWS.items() if row.meets is not None])
def test_placement_meets_each_requirement_by_its_capability_and_names_it(name: str) -> None:
    row = ROWS[name]
    have = simulated_capabilities("h", isolation=ROWS["isolation"].levels[0])
    out_of_reach: Any = {
        int: 10**6,
        float: 1e6,
        bool: not getattr(have, row.capability),
        str: row.levels[-1] if row.levels else "nowhere",
    }[_kind(name)]
    hb = Heartbeat("h", have, 1, 0, 0.0, 1024, 1)
    reason = unmet(Requirements(**{name: out_of_reach}), "h", hb)
    assert reason is not None and reason.startswith(f"{name}=")
    if row.settable:  # the reason is what `--require` takes
        assert parse_requirements([reason]) == Requirements(**{name: out_of_reach})
    assert unmet(Requirements(), "h", hb) is None
