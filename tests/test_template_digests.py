"""templates/digests.json: the marker digest of each template, recorded for its exact text."""

from __future__ import annotations

import json

import libcst as cst
import pytest

from yolopatch import catalog, template_digests
from yolopatch.resources import data_dir
from yolopatch.transforms import common_py, lossless
from yolopatch.transforms.common_py import Template, template_of

SPECS = catalog.all_modules()


def test_the_recorded_table_is_what_the_templates_give_now() -> None:
    """Fails after a template edit until `python -m yolopatch.template_digests` is rerun."""
    recorded = json.loads((data_dir("templates") / catalog.DIGESTS_FILE).read_text(encoding="utf-8"))
    assert recorded == template_digests.table()
    assert set(recorded["digests"]) == {spec.key for spec in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.key)
def test_each_module_carries_its_recorded_digest(spec: catalog.ModuleSpec) -> None:
    template = template_of(spec)
    computed = common_py.digest(common_py.template_statements(template))
    assert template.known_digest == computed == common_py.template_digest(template)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.key)
def test_templates_print_back_exactly(spec: catalog.ModuleSpec) -> None:
    """Templates are parsed without lossless.parse's print-back check; this is that check."""
    assert cst.parse_module(spec.source).code == spec.source
    assert lossless.parse(spec.source).code == spec.source


def test_an_edited_template_is_digested_afresh() -> None:
    spec = catalog.get("soca")
    edited = spec.source.replace("return", "return  ", 1)
    assert edited != spec.source and catalog.recorded_digest("soca", edited) == ""
    assert catalog.recorded_digest("soca", spec.source) == spec.template_digest != ""
    unrecorded = Template(spec.key, spec.version, spec.class_name, edited)
    fresh = common_py.template_digest(unrecorded)
    assert fresh == common_py.digest(common_py.template_statements(unrecorded)) != spec.template_digest
