"""`pip install .` (not editable) gives a working service: card texts, value sets, fixtures, the preview page and
the migrations travel inside the wheel, and the installed package finds them from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0 and "hatchling" in (result.stderr + result.stdout):
        pytest.skip("hatchling (the build backend) is not installed in this environment")
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("cds_service-*.whl")
    return path


def test_wheel_carries_the_runtime_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cds_service/data/terminology.json" in names
    cards = {"stages", "ivig_safety", "_phrases"}
    assert {f"cds_service/cards/{n}.yaml" for n in cards} <= names
    criteria = {"risk_factors", "contraindications", "value_sets"}
    assert {f"cds_service/clinical/criteria/{n}.yaml" for n in criteria} <= names
    assert any(n.startswith("cds_service/fixtures/fhir/") and n.endswith(".json") for n in names)
    assert any(n.startswith("cds_service/fixtures/expected/") for n in names)
    assert any(n.startswith("cds_service/preview/static/") for n in names)
    assert any(n.startswith("cds_service/store/migrations/versions/") for n in names)


def test_installed_wheel_evaluates_a_fixture_from_another_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    fixture = REPO / "fixtures" / "fhir" / "19-ivig-renal-egfr-48.json"
    code = (
        "import json, sys, cds_service\n"
        f"assert cds_service.__file__.startswith({str(target)!r}), cds_service.__file__\n"
        "from cds_service.evaluate import evaluate_bundle\n"
        f"req, resp = evaluate_bundle(json.load(open({str(fixture)!r})), 'order-select')\n"
        "print(json.dumps(resp))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target), CDS_DATA_DIR=str(tmp_path / "data"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout.strip().splitlines()[-1])
    rules = {c["extension"]["org.neurosarcoidosis-cds.rule-id"] for c in response["cards"]}
    assert {"ivig.safety.renal", "ivig.dose"} <= rules
