"""docs/settings.md is generated from the settings' own descriptions and is current."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import Field
from pydantic.fields import FieldInfo

from k2e.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_settings_reference.py"
    spec = importlib.util.spec_from_file_location("gen_settings_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fields() -> dict[str, FieldInfo]:
    return dict(Settings.model_fields)


def test_every_setting_has_a_description() -> None:
    undescribed = [name for name, field in _fields().items() if not (field.description or "")]
    assert not undescribed, f"give these settings a description=: {undescribed}"


def test_the_settings_reference_is_generated_from_the_settings() -> None:
    generator = _generator()
    rendered = generator.render(_fields())
    assert rendered == generator.render(_fields()), "the reference must be deterministic"
    committed = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == rendered, (
        "docs/settings.md is stale: run `PYTHONPATH=. python scripts/gen_settings_reference.py`"
        " and commit"
    )


def test_the_reference_names_every_variable_with_its_default_and_description() -> None:
    reference = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    rows = {line for line in reference.splitlines() if line.startswith("| `")}
    for name, field in _fields().items():
        if name in ("redis_url", "database_url"):
            variable = f"`{name.upper()}`, `K2E_{name.upper()}`"
        else:
            variable = f"`K2E_{name.upper()}`"
        # A setting that also reads a standard variable lists it after its own.
        row = [line for line in rows if line.startswith((f"| {variable} |", f"| {variable}, "))]
        assert len(row) == 1, f"{variable} has {len(row)} rows in docs/settings.md"
        assert " ".join((field.description or "").split()) in row[0].replace("\\|", "|"), name
        default = field.default
        if default is not None and default != "":
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            assert f"`{shown}`" in row[0], (name, shown)


def test_a_setting_without_a_description_or_a_group_is_refused() -> None:
    generator = _generator()
    undescribed = {**_fields(), "data_dir": Field(default="data")}
    with pytest.raises(ValueError, match="data_dir"):
        generator.render(undescribed)
    ungrouped = {**_fields(), "new_knob": Field(default=1, description="a new setting")}
    with pytest.raises(ValueError, match="new_knob"):
        generator.render(ungrouped)
    dropped = {name: field for name, field in _fields().items() if name != "lease_s"}
    with pytest.raises(ValueError, match="lease_s"):
        generator.render(dropped)
