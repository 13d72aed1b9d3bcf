"""The core knows no I/O framework: the rating rules import no faust, aiokafka, mode or
rocksdict (STYLE: the core is a pure library that the worker, `rater rate` and the tests
drive). Checked in a fresh interpreter, so an import made by another test cannot hide one."""

import subprocess
import sys

import pytest

CORE = ["money", "timeutil", "rates", "records", "ledger", "engine", "batch", "state", "partitioning",
        "idstore", "offsets", "offline", "authorize", "notify.messages", "notify.progress"]  # fmt: skip
FRAMEWORKS = ("faust", "aiokafka", "mode", "rocksdict", "aiohttp")


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_imports_no_framework(module):
    probe = (
        f"import sys, rater.{module}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_probe_sees_a_framework_when_one_is_imported():
    probe = f"import sys, aiokafka; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['aiokafka']"
