"""The admission scripts name their KEYS and ARGV slots: bodies read named locals, never a slot number."""

import pytest

from gateway import admission

BUILDERS = (
    admission.admit_keys,
    admission.admit_args,
    admission.slice_grant,
    admission.settle_args,
    admission.slice_settle,
    admission.give_back_keys,
    admission.give_back_args,
)


def test_admission_scripts_read_their_slots_by_name_only_in_the_prologue():
    for script in (admission._ADMIT, admission._SETTLE, admission._SETTLE_RECORD, admission._GIVE_BACK):
        lines = script.source.splitlines()
        prologue = [line for line in lines if line.startswith("local ") and ("= KEYS[" in line or "= ARGV[" in line)]
        body = "\n".join(lines[len(prologue) :])
        assert prologue and lines[: len(prologue)] == prologue
        assert "KEYS[" not in body and "ARGV[" not in body


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_each_builder_lists_its_slots_in_the_order_the_prologue_names_them(builder):
    names = admission.slots(builder)
    assert builder(**{name: name for name in names}) == list(names)
