"""`c2d config` lists every setting the code reads: a C2D_ variable read anywhere but not listed fails here."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import subprocess
from pathlib import Path

from plumbing.storage.base import StorageConfig
from tests.cli.conftest import C2D

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for folder in ("services", "plumbing", "cli") for p in (ROOT / folder).rglob("*.py")]
NAME = re.compile(r"C2D_[A-Z0-9_]*[A-Z0-9]_?")
LOAD = re.compile(r"settings\.load\((\w+), \"(C2D_\w+)\"\)")


def listed() -> dict[str, dict]:
    answer = subprocess.run([str(C2D), "config", "--json"], capture_output=True, text=True, check=True)
    return {s["name"]: s for s in json.loads(answer.stdout)["settings"]}


def read_in_code() -> tuple[set[str], set[str], dict[str, str]]:
    """(full names, prefixes, settings.load's class -> prefix) that the code mentions."""
    names, prefixes, loads = set(), set(), {}
    for path in SOURCES:
        text = path.read_text()
        for name in NAME.findall(text):
            (prefixes if name.endswith("_") else names).add(name)
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for cls, prefix in LOAD.findall(text):
            loads[f"{module}:{cls}"] = prefix
    return names, prefixes, loads


def test_every_c2d_variable_in_the_code_is_listed():
    settings = listed()
    names, prefixes, loads = read_in_code()
    assert loads, "no settings.load call found: the scan is broken"
    # a settings.load prefix (C2D_ENGINE) is a prefix too, not a variable
    missing = {n for n in names if n not in settings and not any(s.startswith(n + "_") for s in settings)}
    assert not missing, f"read in the code but not listed by `c2d config`: {sorted(missing)}"
    unlisted_prefixes = {p for p in prefixes if not any(s.startswith(p) for s in settings)}
    assert not unlisted_prefixes, sorted(unlisted_prefixes)


def test_every_field_of_every_loaded_settings_class_is_listed():
    settings = listed()
    _, _, loads = read_in_code()
    for where, prefix in loads.items():
        module, cls = where.split(":")
        settings_class = getattr(importlib.import_module(module), cls)  # defined or imported there
        for field in dataclasses.fields(settings_class):
            assert f"{prefix}_{field.name.upper()}" in settings, (where, field.name)
    for field in dataclasses.fields(StorageConfig):  # read by name in StorageConfig.from_env
        assert f"{StorageConfig.ENV_PREFIX}{field.name.upper()}" in settings


def test_defaults_are_written_as_environment_values_with_a_meaning():
    settings = listed()
    assert settings["C2D_OPERATOR_ENGINES"]["default"] == "local=127.0.0.1:50053"  # not a Python tuple
    assert settings["C2D_ENGINE_SANDBOX"]["default"] == "true"
    assert settings["C2D_STAGING_ALLOW_HOSTS"]["default"] == ""
    assert settings["C2D_ENGINE_MEMORY_BYTES"]["default"] == str(1 << 30)
    assert settings["C2D_STORAGE_KIND"]["default"] == "local"
    for name in ("C2D_DATA_DIR", "C2D_SERVICE_TOKEN", "C2D_TLS_CERT", "C2D_LOG_LEVEL", "C2D_STAGING_MAX_RETRIES"):
        assert name in settings
    for setting in settings.values():
        assert setting["meaning"] and "\n" not in setting["meaning"], setting
        assert not setting["default"].startswith("("), setting  # no Python tuple
        if setting["default"].startswith(("[", "{")):  # JSON, said so: no Python list
            assert setting["meaning"].startswith("JSON"), setting


def test_the_human_listing_has_one_line_per_setting():
    answer = subprocess.run([str(C2D), "config"], capture_output=True, text=True, check=True)
    lines = [line for line in answer.stdout.splitlines() if line.startswith("C2D_")]
    assert sorted(line.split()[0] for line in lines) == sorted(listed())
