"""SETTINGS is the one place a setting is written: the dataclass, the README, the tests and the deployment follow it."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from shared.errors import ConfigurationError
from shared.settings import SETTINGS, Settings, readme_rows, readme_table
from tests.conftest import APP_SETTINGS, ROOT
from tests.test_infra import INFRA, bicep

BY_NAME = {setting.name: setting for setting in SETTINGS}
# The deployment's own starting values, deliberately not the app's defaults (which refuse every request).
DEPLOYMENT_CHOICES = {"ALLOWED_LICENSES", "DEFAULT_LICENSE"}


def readme_settings_table() -> str:
    """The first table under README "## Settings", as text."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0].splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("|"))
    end = next((i for i in range(start, len(section)) if not section[i].startswith("|")), len(section))
    return "".join(line + "\n" for line in section[start:end])


class _Recorder(dict[str, str]):
    """An empty environment that remembers, in order, every name the settings loader asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.append(key)
        return default


def test_readme_settings_table_is_the_rendered_table() -> None:
    """README "Settings" lists exactly the rows SETTINGS renders, so the doc cannot drift from the code."""
    assert readme_settings_table() == readme_table(), (
        "README 'Settings' differs from SETTINGS: paste the output of `python -m shared.settings` into it"
    )


def test_every_settings_field_is_one_row_of_the_table() -> None:
    """The dataclass has one field per setting and no other, and no name or field is listed twice."""
    attrs = [setting.attr for setting in SETTINGS]
    names = [setting.name for setting in SETTINGS]
    assert len(set(attrs)) == len(attrs) and len(set(names)) == len(names)
    assert sorted(field.name for field in dataclasses.fields(Settings)) == sorted(attrs)


def test_dataclass_defaults_are_the_tables() -> None:
    """Each field's default is its setting's default, parsed, and a secret one is left out of the repr."""
    for field in dataclasses.fields(Settings):
        setting = next(s for s in SETTINGS if s.attr == field.name)
        assert field.default == setting.value, setting.name
        assert field.repr is not setting.secret, setting.name


def test_an_empty_environment_gives_the_tables_defaults() -> None:
    """With nothing set, every field holds the table's default (the endpoints follow the public cloud)."""
    settings = Settings.from_env({})
    for setting in SETTINGS:
        assert getattr(settings, setting.attr) == setting.value, setting.name


def test_the_app_reads_the_tables_names_in_its_order() -> None:
    """Settings.from_env asks the environment for each name of the table once, in order, and for nothing else."""
    recorder = _Recorder()
    Settings.from_env(recorder)
    assert recorder.asked == [setting.name for setting in SETTINGS]


def test_each_readme_row_takes_its_meaning_from_its_first_setting() -> None:
    """A row's first setting carries the doc line and the others in its group carry none, so no text is lost."""
    for row in readme_rows():
        assert row[0].doc, f"{row[0].name} has no doc line"
        assert all(not setting.doc for setting in row[1:]), [s.name for s in row]


def test_a_groups_settings_are_listed_together() -> None:
    """The settings of one group are adjacent in the table, so each group renders as one README row."""
    groups = [row[0].group for row in readme_rows() if row[0].group]
    assert len(groups) == len(set(groups))
    assert all(setting.group in ("", row[0].group) for row in readme_rows() for setting in row)


def test_the_tests_clear_every_setting() -> None:
    """The fixtures delete every name of the table, so a developer's shell never leaks into a test."""
    assert {setting.name for setting in SETTINGS} <= set(APP_SETTINGS)


def test_the_local_example_names_only_settings_at_their_defaults() -> None:
    """local.settings.example.json names settings (and the host's runtime), each valid and at its default."""
    values = json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))["Values"]
    assert set(values) - {"FUNCTIONS_WORKER_RUNTIME"} <= set(BY_NAME)
    example = Settings.from_env(values)
    for name in values.keys() & BY_NAME.keys():
        if BY_NAME[name].value is not None:
            assert getattr(example, BY_NAME[name].attr) == BY_NAME[name].value, name


def test_a_default_named_in_prose_is_the_tables() -> None:
    """Wherever README or docs/ say "`NAME` (default X)" or "`NAME` defaults to X", X is the table's default."""
    said = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))
        for setting in SETTINGS:
            pattern = rf"`{re.escape(setting.name)}`[^`|]{{0,40}}?\bdefaults? (?:to )?`?([^\s`),;]+)"
            said += [(path.name, setting.name, m.group(1), setting.default) for m in re.finditer(pattern, text)]
    assert said, "no default is named in prose any more: drop this test or fix its pattern"
    assert [s for s in said if s[2] != s[3]] == []


def deployed_values() -> dict[str, str]:
    """Each setting the templates give a plain value or a parameter's default: as the template, and as azd maps it."""
    template = bicep("main.bicep")
    parameters = template["parameters"]
    values: dict[str, str] = {}
    for name, value in template["modules"]["api"]["config"]["params"]["appSettings"].items():
        if isinstance(value, str):  # a parameter's name or a literal: pycep writes both as a plain string
            values[name] = parameters[value]["default"] if value in parameters else value
    mapping = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    for entry in mapping.values():
        match = re.fullmatch(r"\$\{(\w+)=(.*)\}", str(entry.get("value", "")))
        if match and match.group(1) in BY_NAME:
            values[f"{match.group(1)} (azd)"] = match.group(2)
    return values


def test_the_deployment_starts_from_the_tables_defaults() -> None:
    """Each value the deployment writes down is valid and is the app's default, but for its deliberate choices.

    One test over all of them, each wrong one named: parametrizing by them parsed the template at collection."""
    values = deployed_values()
    assert len(values) > 10, "the templates' app settings were not found"
    wrong = []
    for label, value in sorted(values.items()):
        name = label.removesuffix(" (azd)")
        try:
            deployed = getattr(Settings.from_env({name: value}), BY_NAME[name].attr)
        except ConfigurationError as exc:
            wrong.append(f"{label} = {value!r} is refused: {exc}")
            continue
        if name not in DEPLOYMENT_CHOICES and deployed != BY_NAME[name].value:
            wrong.append(f"{label} = {value!r}, the table says {BY_NAME[name].default!r}")
    assert wrong == []
