"""The core knows no I/O framework: the rating rules import no faust, aiokafka, mode or
rocksdict (STYLE: the core is a pure library that the worker, `rater rate` and the tests
drive). Checked in a fresh interpreter, so an import made by another test cannot hide one."""

import subprocess
import sys
from pathlib import Path

import pytest

import rater

CORE = sorted(
    ["rater.core." + p.stem for p in (Path(rater.__file__).parent / "core").glob("*.py") if p.stem != "__init__"]
    + ["rater.core", "rater.offline", "rater.statefile", "rater.notify.messages", "rater.notify.progress"]
)
FRAMEWORKS = ("faust", "aiokafka", "mode", "rocksdict", "aiohttp")


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_no_framework(module):
    probe = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_probe_sees_a_framework_when_one_is_imported():
    probe = f"import sys, aiokafka; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['aiokafka']"


def test_the_core_list_holds_every_core_module():
    # Written out by hand: a module added to rater/core/ is probed without anyone listing
    # it, and this list says what the core is meant to hold.
    assert {m for m in CORE if m.startswith("rater.core.")} == {
        "rater.core." + m
        for m in (
            "applied",
            "authorize",
            "batch",
            "bounds",
            "codec",
            "continuity",
            "engine",
            "idsegments",
            "ledger",
            "money",
            "native_engine",
            "partitioning",
            "rates",
            "records",
            "routing",
            "timeutil",
        )
    }
