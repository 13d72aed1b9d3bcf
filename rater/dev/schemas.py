"""The JSON Schemas of the wire contract (``schemas/*.json``), for tests and tools.

``load_schema("cdr")`` reads ``schemas/cdr.json``; ``validator("cdr")`` returns a cached
``jsonschema.Draft202012Validator`` whose registry holds every schema of the directory,
so the cross-file ``$ref``s (``common.json#/$defs/money``, ``account.json``) resolve
without any network access. jsonschema is a test dependency, imported only here, lazily:
the rater itself never validates its records against these files (``rater.core.records`` does
that by hand, faster), and the tests check that both agree.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "schemas"
BASE_URI = "https://rater.dev/schemas/"


def _path(name: str) -> Path:
    stem = name[: -len(".json")] if name.endswith(".json") else name
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        raise ValueError(f"{name!r} is not a schema name")
    return SCHEMA_DIR / f"{stem}.json"


def schema_names() -> list[str]:
    """The names of every schema in the directory (``cdr``, ``common``, ...), sorted."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``schemas/NAME.json`` (``name`` with or without ``.json``), freshly parsed."""
    path = _path(name)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such schema") from None


@lru_cache(maxsize=1)
def registry():
    """A ``referencing.Registry`` of every schema of the directory, by its ``$id``."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resources = []
    for name in schema_names():
        schema = load_schema(name)
        uri = schema.get("$id", BASE_URI + f"{name}.json")
        resources.append((uri, Resource.from_contents(schema, default_specification=DRAFT202012)))
    return Registry().with_resources(resources).crawl()


@lru_cache(maxsize=None)
def validator(name: str):
    """A cached ``Draft202012Validator`` for ``schemas/NAME.json``, cross-file refs resolved."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name), registry=registry())


__all__ = ["SCHEMA_DIR", "BASE_URI", "schema_names", "load_schema", "registry", "validator"]
