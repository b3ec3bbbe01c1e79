"""The ``cds-service`` command as a person meets it: real processes, real output on stdout and stderr.

* ``serve`` prints one line with its URLs once it listens; a port in use or out of range is one line.
* Every configuration mistake (environment or ``.env``, service settings, clinical thresholds, the site
  code file, secrets from files) is one line naming the setting and what it expects, exit 2.
* ``evaluate`` keeps stdout pure JSON with ``--json`` and exits 1 when the rules failed.
* Nothing any command prints carries the patient's name, birth date or identifiers, even when the
  configuration is broken or the rules fail with the patient's data in the exception and its locals.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import FIXTURES, free_port, load_json

from cds_service.config import ConfigurationError, Settings, load_configuration

FIXTURE = FIXTURES / "fhir" / "19-ivig-renal-egfr-48.json"
EVALUATION_FAILED = "service.evaluation-failed"
RULE_ID = "org.neurosarcoidosis-cds.rule-id"

# The fixture patient, with identifying data no output may ever show.
PATIENT_ID = "pt-zq-5521"
GIVEN, FAMILY = "Zelda", "Quixotic-Marchetti"
BIRTH_DATE = "1961-07-23"
MRN, SSN = "MRN-77331904", "999-41-7733"
PHONE = "+1-555-0142-7789"
SECRETS = (PATIENT_ID, GIVEN, FAMILY, BIRTH_DATE, "23/07/1961", "07/23/1961", MRN, SSN, PHONE)

# The rules fail with the patient's data in the exception message and in their local variables.
FAILING_ENGINE = """
import cds_service.clinical.engine as engine
original = engine.build_facts
def build_facts(record, th):
    patient = record.patient or {}
    if "name" not in patient:  # the service's own warm-up record
        return original(record, th)
    name = patient["name"][0]["family"]
    raise ValueError(f"cannot read {name} born {patient['birthDate']} ({patient['identifier']})")
engine.build_facts = build_facts
"""

BROKEN_CONFIGURATIONS = {
    "extra codes file missing": ({"CDS_EXTRA_CODES": "/nonexistent/site-codes.yaml"}, "CDS_EXTRA_CODES"),
    "non-numeric threshold": ({"CDS_EGFR_WARNING": "abc"}, "CDS_EGFR_WARNING"),
    "critical above warning": ({"CDS_EGFR_CRITICAL": "90"}, "CDS_EGFR_CRITICAL"),
    "database not a URL": ({"CDS_DATABASE_URL": "notaurl"}, "CDS_DATABASE_URL"),
    "unsupported database": ({"CDS_DATABASE_URL": "mysql://cds:pw@db/cds"}, "CDS_DATABASE_URL"),
    "log level": ({"CDS_LOG_LEVEL": "LOUD"}, "CDS_LOG_LEVEL"),
    "port not a number": ({"CDS_PORT": "eighty"}, "CDS_PORT"),
    "port out of range": ({"CDS_PORT": "99999"}, "CDS_PORT"),
    "deadline not a number": ({"CDS_FHIR_DEADLINE_SECONDS": "fast"}, "CDS_FHIR_DEADLINE_SECONDS"),
    "boolean": ({"CDS_ALLOW_INSECURE": "maybe"}, "CDS_ALLOW_INSECURE"),
    "issuers not JSON": ({"CDS_TRUSTED_ISSUERS": "{oops"}, "CDS_TRUSTED_ISSUERS"),
    "redis URL": ({"CDS_REDIS_URL": "localhost:6379"}, "CDS_REDIS_URL"),
    "secret file missing": ({"CDS_PATIENT_KEY_SECRET_FILE": "/nonexistent/secret"}, "CDS_PATIENT_KEY_SECRET_FILE"),
}


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(CDS_DATA_DIR=str(tmp_path / "data"), NO_COLOR="1", COLUMNS="200", **extra)
    return env


def cli(*args: str, env: dict[str, str], cwd: Path, prelude: str = "", timeout: float = 180):
    """``cds-service ARGS`` in a fresh interpreter, optionally after ``prelude`` (e.g. a failing engine)."""
    code = f"import sys\n{prelude}\nfrom cds_service.cli import main\nmain(sys.argv[1:])\n"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def identifying_bundle() -> dict:
    """Fixture 19 (IVIG, eGFR 48) given a patient with a name, birth date, MRN, SSN and phone number."""
    bundle = copy.deepcopy(load_json(FIXTURE))
    old_id = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    text = json.dumps(bundle).replace(f'"Patient/{old_id}"', f'"Patient/{PATIENT_ID}"')
    bundle = json.loads(text)
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient":
            res.update(id=PATIENT_ID, birthDate=BIRTH_DATE, name=[{"family": FAMILY, "given": [GIVEN]}],
                       telecom=[{"system": "phone", "value": PHONE}],
                       identifier=[{"system": "https://hospital.example.org/mrn", "value": MRN},
                                   {"system": "http://hl7.org/fhir/sid/us-ssn", "value": SSN}])
    return bundle


@pytest.fixture
def fixture_files(tmp_path):
    """The identifying bundle as a file, in a folder of its own, and a broken copy (Patient birthDate in the
    wrong format) beside it."""
    folder = tmp_path / "bundles"
    folder.mkdir()
    good = folder / "patient.json"
    good.write_text(json.dumps(identifying_bundle()), encoding="utf-8")
    broken = identifying_bundle()
    next(e for e in broken["entry"] if e["resource"]["resourceType"] == "Patient")["resource"]["birthDate"] = \
        "23/07/1961"
    (folder / "wrong-date.json").write_text(json.dumps(broken), encoding="utf-8")
    return good, folder


def assert_no_patient_data(text: str) -> None:
    found = [s for s in SECRETS if s in text]
    assert not found, f"patient data in the output: {found}\n{text[:3000]}"


# --------------------------------------------------------------------------- configuration errors
def test_a_valid_configuration_loads(monkeypatch):
    monkeypatch.delenv("CDS_EXTRA_CODES", raising=False)
    assert isinstance(load_configuration(), Settings)


def run_main(argv: list[str], env: dict[str, str], capfd, monkeypatch) -> tuple[int, str, str]:
    """``cds-service ARGV`` in this process (fast), with exactly the ``CDS_*`` variables in ``env``."""
    from cds_service.cli import main

    for k in list(os.environ):
        if k.startswith("CDS_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capfd.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("name", sorted(BROKEN_CONFIGURATIONS))
def test_each_configuration_mistake_is_one_line_naming_the_setting(name, tmp_path, capfd, monkeypatch):
    variables, setting = BROKEN_CONFIGURATIONS[name]
    monkeypatch.chdir(tmp_path)
    for command in (["evaluate", str(FIXTURE), "--json"], ["serve"], ["report"], ["db", "upgrade"]):
        code, out, err = run_main(command, {"CDS_DATA_DIR": str(tmp_path / "data"), **variables}, capfd,
                                  monkeypatch)
        lines = err.strip().splitlines()
        assert code == 2, (command, err)
        assert len(lines) == 1 and setting in lines[0], lines
        assert "expected" in lines[0] or "must be" in lines[0], lines
        assert "Traceback" not in err and out == ""
    assert not (tmp_path / "data").exists()


def test_serve_pauses_the_garbage_collector_only_while_it_loads(tmp_path, capfd, monkeypatch):
    """One worker: the collector is off while this process loads the service (tune_gc turns it back on once the
    application is loaded), and on again however `serve` ends: a refusal, or uvicorn returning."""
    import gc

    import uvicorn

    seen: list[bool] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.append(gc.isenabled()))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    env = {"CDS_DATA_DIR": str(tmp_path / "data"), "CDS_PORT": str(free_port())}
    code, _out, _err = run_main(["serve"], env, capfd, monkeypatch)
    assert code == 0 and seen == [False] and gc.isenabled()
    code, _out, err = run_main(["serve", "--port", "0"], env, capfd, monkeypatch)
    assert code == 2 and "--port" in err and gc.isenabled()


def test_threshold_cross_checks_name_both_settings(monkeypatch):
    for pair, message in [
        ({"CDS_EGFR_CRITICAL": "90"}, "CDS_EGFR_CRITICAL (90) must be below CDS_EGFR_WARNING (60)"),
        ({"CDS_GC_DEPENDENCE_MG": "25"}, "CDS_GC_DEPENDENCE_MG (25) must be below CDS_GC_HIGH_DOSE_MG (20)"),
        ({"CDS_GC_PULSE_MG": "15", "CDS_GC_HIGH_DOSE_MG": "20"}, "CDS_GC_HIGH_DOSE_MG (20) must be below "
                                                                  "CDS_GC_PULSE_MG (15)"),
        ({"CDS_MTX_SUGGESTED_MG_WEEK": "7.5"}, "CDS_MTX_SUBTHERAPEUTIC_MG_WEEK (10) must be at most "
                                                "CDS_MTX_SUGGESTED_MG_WEEK (7.5)"),
        ({"CDS_IVIG_MAX_COURSE_G_PER_KG": "1.5"}, "CDS_IVIG_DOSE_G_PER_KG (2) must be at most "
                                                  "CDS_IVIG_MAX_COURSE_G_PER_KG (1.5)"),
        ({"CDS_IVIG_MAX_DAYS": "3"}, "CDS_IVIG_SUGGESTED_DAYS (5) must be at most CDS_IVIG_MAX_DAYS (3)"),
        ({"CDS_IVIG_SUGGESTED_DAYS": "1", "CDS_IVIG_MIN_DAYS": "1"}, "CDS_IVIG_MAX_DAILY_G_PER_KG (1)"),
        ({"CDS_AKI_RATIO": "0.9"}, "CDS_AKI_RATIO must be above 1"),
        ({"CDS_LAB_RECENCY_DAYS": "0"}, "CDS_LAB_RECENCY_DAYS must be above 0"),
        ({"CDS_EGFR_CRITICAL": "nan"}, "CDS_EGFR_CRITICAL must be a finite number"),
        ({"CDS_IVIG_MAX_DAILY_G_PER_KG": "inf"}, "CDS_IVIG_MAX_DAILY_G_PER_KG must be a finite number"),
    ]:
        for k in list(os.environ):
            if k.startswith("CDS_"):
                monkeypatch.delenv(k)
        for k, v in pair.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(ConfigurationError) as err:
            load_configuration()
        assert any(message in line for line in err.value.lines), (message, err.value.lines)


def test_consistent_site_changes_are_accepted(monkeypatch):
    for k, v in {"CDS_EGFR_WARNING": "45", "CDS_EGFR_CRITICAL": "15", "CDS_GC_HIGH_DOSE_MG": "30",
                 "CDS_PREDNISONE_SUGGESTED_MG_DAY": "40"}.items():
        monkeypatch.setenv(k, v)
    from cds_service.clinical.thresholds import get_thresholds

    load_configuration()
    assert (get_thresholds().egfr_warning, get_thresholds().egfr_critical) == (45, 15)
    for k in ("CDS_EGFR_WARNING", "CDS_EGFR_CRITICAL", "CDS_GC_HIGH_DOSE_MG", "CDS_PREDNISONE_SUGGESTED_MG_DAY"):
        monkeypatch.delenv(k)
    load_configuration()  # the caches hold the defaults again for the tests that follow


def test_a_mistake_in_dotenv_says_it_comes_from_there(tmp_path):
    (tmp_path / ".env").write_text("CDS_LOG_LEVEL=LOUD\nCDS_EGFR_WARNING=sixty\n", encoding="utf-8")
    result = cli("evaluate", str(FIXTURE), env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Configuration error in CDS_LOG_LEVEL (set in .env): expected one of DEBUG, INFO, WARNING, ERROR, "
        "CRITICAL.",
        "Configuration error in CDS_EGFR_WARNING (set in .env): expected a number.",
    ]


def test_extra_codes_from_dotenv_are_used(tmp_path):
    """CDS_EXTRA_CODES in .env reaches the value sets like every other setting (it used to be read from the
    environment only)."""
    codes = tmp_path / "site-codes.yaml"
    codes.write_text("- {group: missing-group-is-fine, system: http://snomed.info/sct, code: '1', display: x}\n")
    (tmp_path / ".env").write_text(f"CDS_EXTRA_CODES={tmp_path / 'nope.yaml'}\n", encoding="utf-8")
    result = cli("evaluate", str(FIXTURE), env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "CDS_EXTRA_CODES (set in .env)" in result.stderr
    (tmp_path / ".env").write_text(f"CDS_EXTRA_CODES={codes}\n", encoding="utf-8")
    result = cli("evaluate", str(FIXTURE), "--json", env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {group: g, system: nowhere, code: '1'}\n")
    result = cli("evaluate", str(FIXTURE), env=clean_env(tmp_path, CDS_EXTRA_CODES=str(bad)), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("Configuration error in CDS_EXTRA_CODES")


def test_a_data_dir_that_is_a_file_is_refused_with_the_setting_named(tmp_path):
    afile = tmp_path / "not-a-dir"
    afile.write_text("x")
    env = clean_env(tmp_path)
    env["CDS_DATA_DIR"] = str(afile)
    result = cli("serve", "--port", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    expected = f"Configuration error in CDS_DATA_DIR: expected a directory ({afile} is a file)."
    assert result.stderr.strip().splitlines()[-1] == expected


def test_settings_from_files(tmp_path, monkeypatch):
    """CDS_<NAME>_FILE: Docker and Kubernetes secrets; the trailing newline is not part of the value."""
    for k in list(os.environ):
        if k.startswith("CDS_"):
            monkeypatch.delenv(k)
    secret = tmp_path / "patient_key"
    secret.write_text("s3cret-from-a-file-0123456789abcdef\n", encoding="utf-8")
    url = tmp_path / "database_url"
    url.write_text("postgresql://cds:pw@db.internal:5432/cds\n", encoding="utf-8")
    monkeypatch.setenv("CDS_PATIENT_KEY_SECRET_FILE", str(secret))
    monkeypatch.setenv("CDS_DATABASE_URL_FILE", str(url))
    settings = Settings(_env_file=None)
    assert settings.patient_key_secret == "s3cret-from-a-file-0123456789abcdef"
    assert settings.database_label == "PostgreSQL db.internal:5432/cds"  # never the user or password
    monkeypatch.setenv("CDS_PATIENT_KEY_SECRET", "also-set")
    with pytest.raises(ConfigurationError, match="CDS_PATIENT_KEY_SECRET or CDS_PATIENT_KEY_SECRET_FILE"):
        Settings(_env_file=None)
    monkeypatch.delenv("CDS_PATIENT_KEY_SECRET")
    (tmp_path / ".env").write_text(f"CDS_REDIS_URL_FILE={tmp_path / 'missing'}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="CDS_REDIS_URL_FILE: expected a readable file"):
        Settings()


def test_secret_file_reaches_the_audit_trail(tmp_path, monkeypatch):
    """The pseudonymous patient key is keyed with the secret read from the file."""
    from cds_service.store.pseudonym import load_secret, patient_key

    secret = tmp_path / "patient_key"
    secret.write_text("k" * 40 + "\n")
    monkeypatch.setenv("CDS_PATIENT_KEY_SECRET_FILE", str(secret))
    monkeypatch.delenv("CDS_PATIENT_KEY_SECRET", raising=False)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    key = load_secret(settings.patient_key_secret, settings.data_dir)
    assert patient_key(key, "p1") == patient_key(("k" * 40).encode(), "p1")
    assert not (tmp_path / "data").exists()  # no generated secret needed


# --------------------------------------------------------------------------- serve
def _first_line(proc: subprocess.Popen, timeout: float = 90) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line or not line[0]:
        proc.kill()
        pytest.fail("serve printed nothing: " + (proc.stderr.read() if proc.stderr else ""))
    return line[0].rstrip("\n")


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.terminate()
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def test_serve_says_where_it_listens_once_it_does(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cds_service", "serve", "--port", str(port)],
                            env=clean_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(proc)
        base = f"http://127.0.0.1:{port}"
        assert line == f"cds-service listening on {base} — OpenAPI page {base}/docs, card preview {base}/"
        # the line is true when printed: the service answers at once
        assert httpx.get(base + "/health", timeout=5).json()["status"] == "ok"
        assert httpx.get(base + "/ready", timeout=5).json()["status"] == "ready"
        assert httpx.get(base + "/docs", timeout=5).status_code == 200
    finally:
        out, err = _stop(proc)
    assert out == ""  # one line only
    assert "Traceback" not in err and "authentication is OFF" in err


def test_serve_on_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--port", str(port), env=clean_env(tmp_path), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"Port {port} on 127.0.0.1 is already in use (another cds-service?): stop that process, "
                         "or choose another port with --port or CDS_PORT.")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "99999"], "Error in --port: expected a whole number from 1 to 65535."),
    (["--port", "eighty"], "Error: Invalid value for '--port'"),
    (["--workers", "0"], "Error in --workers: expected a whole number of at least 1."),
    (["--bogus"], "Error: No such option: --bogus"),
])
def test_serve_argument_mistakes_are_one_line(tmp_path, args, message):
    result = cli("serve", *args, env=clean_env(tmp_path), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr


SERVE_DEFAULTS = {"host": None, "port": None, "workers": 1, "insecure": False}


@pytest.mark.parametrize("args", [
    [], ["--port", "8123"], ["--port=8123"], ["--host", "::1", "--port", "8123", "--workers", "2", "--insecure"],
    ["--insecure", "--host=0.0.0.0"], ["--workers=3", "--host", "localhost"], ["--port", "0"], ["--host", "[::1]"],
])
def test_serve_reads_its_usual_arguments_as_typer_does(args, monkeypatch):
    """`cds-service serve` reads its usual arguments without Typer (cli.quick_serve_arguments): the values it
    runs with are the ones Typer gives the same arguments."""
    from typer.testing import CliRunner

    from cds_service import cli

    runs: list[dict] = []
    monkeypatch.setattr(cli, "serve", lambda *a: runs.append(dict(zip(SERVE_DEFAULTS, a, strict=True))))
    result = CliRunner().invoke(cli.app, ["serve", *args])
    assert result.exit_code == 0, result.output
    quick = cli.quick_serve_arguments(["serve", *args])
    assert quick is not None
    assert runs == [SERVE_DEFAULTS | quick]


@pytest.mark.parametrize("args", [
    ["--help"], ["--port", "eighty"], ["--port", "08000"], ["--port", "+80"], ["--port", "８０"], ["--bogus"],
    ["--port"], ["--port", "80", "--port", "81"], ["--host", "-x"], ["--host="], ["--insecure=1"], ["--ho", "x"],
    ["--", "--port", "80"], ["serve"],
])
def test_serve_leaves_every_other_argument_to_typer(args):
    """Help, mistakes and unusual spellings are read by Typer, with its own messages."""
    from cds_service.cli import quick_serve_arguments

    assert quick_serve_arguments(["serve", *args]) is None
    assert quick_serve_arguments(["evaluate", *args]) is None


def test_serve_with_workers_sums_metrics_in_a_directory_of_its_own(tmp_path):
    """--workers N without PROMETHEUS_MULTIPROC_DIR: the command makes a directory for this run (so /metrics
    reports every worker's counts, whichever worker answers) and removes it when it stops."""
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cds_service", "serve", "--port", str(port), "--workers", "2"],
                            env=clean_env(tmp_path, TMPDIR=str(tmp)), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(proc)
        assert "(2 workers)" in line
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # the workers listen shortly after the shared socket is bound
            try:
                httpx.get(base + "/health", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for _ in range(29):  # a new connection each: the kernel spreads them over the workers
            assert httpx.get(base + "/health", timeout=5).status_code == 200
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert 'cds_http_responses_total{endpoint="health",status="200"} 30.0' in metrics
        assert [p.name.startswith("cds-metrics-") for p in tmp.iterdir()] == [True]
    finally:
        _stop(proc)
    assert [p for p in tmp.iterdir() if p.name.startswith("cds-metrics-")] == []


# --------------------------------------------------------------------------- evaluate
def test_evaluate_json_is_pure_and_a_failed_evaluation_exits_1(tmp_path, fixture_files):
    good, _ = fixture_files
    result = cli("evaluate", str(good), "--json", env=clean_env(tmp_path), cwd=tmp_path, prelude=FAILING_ENGINE)
    assert result.returncode == 1
    cards = json.loads(result.stdout)["cards"]  # stdout is the JSON document and nothing else
    assert [c["extension"][RULE_ID] for c in cards] == [EVALUATION_FAILED]
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failure = next(entry for entry in logs if entry["event"] == "rules_failed")
    assert re.fullmatch(r"ValueError at \S+:\d+ in build_facts( <- .*)?", failure["exception"]), failure
    assert "patient.json: evaluation failed" in result.stderr
    assert_no_patient_data(result.stdout + result.stderr)


def test_evaluate_patient_view(tmp_path):
    result = cli("evaluate", str(FIXTURE), "--hook", "patient-view", "--json", env=clean_env(tmp_path),
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rules = [c["extension"][RULE_ID] for c in json.loads(result.stdout)["cards"]]
    # the chart as it stands (the IVIG order not placed): the ladder summary, no IVIG safety card
    assert rules and all(not r.startswith("ivig.safety") and r != "ivig.dose" for r in rules)
    bad = cli("evaluate", str(FIXTURE), "--hook", "admission", env=clean_env(tmp_path), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "Error in --hook: expected one of order-select, order-sign, patient-view."


# --------------------------------------------------------------------------- no patient data, ever
def _commands(good: Path, folder: Path, port: int) -> list[list[str]]:
    return [["evaluate", str(good)], ["evaluate", str(good), "--json"], ["evaluate", str(folder)],
            ["evaluate", str(folder), "--json"], ["evaluate", str(good), "--hook", "patient-view"],
            ["serve", "--port", str(port)], ["report"], ["report", "--json"], ["purge"], ["db", "upgrade"],
            ["db", "current"]]


def test_no_command_prints_patient_data_with_broken_configuration(tmp_path, fixture_files, capfd, monkeypatch):
    """Every command, every broken setting, the same identifying fixture: all output is grepped."""
    good, folder = fixture_files
    monkeypatch.chdir(tmp_path)
    for name in sorted(BROKEN_CONFIGURATIONS):
        variables, _ = BROKEN_CONFIGURATIONS[name]
        for command in _commands(good, folder, free_port()):
            code, out, err = run_main(command, {"CDS_DATA_DIR": str(tmp_path / "data"), **variables}, capfd,
                                      monkeypatch)
            assert code == 2, (name, command, err)
            assert "Traceback" not in err, (name, command)
            assert_no_patient_data(out + err)


def test_the_real_command_prints_no_patient_data_with_broken_configuration(tmp_path, fixture_files):
    """The same through the entry point in fresh processes, for the two mistakes first reported: a missing
    site code file (every command), a threshold that is not a number (evaluate --json)."""
    good, folder = fixture_files
    runs = [("extra codes file missing", command) for command in _commands(good, folder, free_port())]
    runs.append(("non-numeric threshold", ["evaluate", str(good), "--json"]))

    def run(item):
        name, command = item
        variables, _ = BROKEN_CONFIGURATIONS[name]
        return item, cli(*command, env=clean_env(tmp_path, **variables), cwd=tmp_path)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for (name, command), result in pool.map(run, runs):
            assert result.returncode == 2, (name, command, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
            assert_no_patient_data(result.stdout + result.stderr)


def test_no_command_prints_patient_data_when_the_rules_fail(tmp_path, fixture_files):
    """The engine raises with the name, birth date and identifiers in its message and locals: the evaluate
    commands say evaluation failed (exit 1), and neither the message nor the locals appear anywhere."""
    good, folder = fixture_files
    for command in _commands(good, folder, free_port())[:5]:
        result = cli(*command, env=clean_env(tmp_path), cwd=tmp_path, prelude=FAILING_ENGINE)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert_no_patient_data(result.stdout + result.stderr)
    # the broken bundle (the birth date in another format) is named by entry, never by its content
    result = cli("evaluate", str(folder), env=clean_env(tmp_path), cwd=tmp_path)
    assert "wrong-date.json: Bundle.entry[0].resource (Patient) is not valid FHIR R4" in result.stderr
    assert_no_patient_data(result.stdout + result.stderr)


def test_serve_prints_no_patient_data_when_the_rules_fail(tmp_path, fixture_files):
    """The service with failing rules, called with the identifying bundle on every path that evaluates it."""
    good, _ = fixture_files
    port = free_port()
    code = f"import sys\n{FAILING_ENGINE}\nfrom cds_service.cli import main\nmain(sys.argv[1:])\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port)], env=clean_env(tmp_path),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _first_line(proc)
        base = f"http://127.0.0.1:{port}"
        body = good.read_bytes()
        for hook in ("order-select", "order-sign", "patient-view"):
            resp = httpx.post(f"{base}/fixtures/evaluate?hook={hook}", content=body,
                              headers={"Content-Type": "application/json"}, timeout=30)
            assert resp.status_code == 200
            cards = resp.json()["response"]["cards"]
            assert [c["extension"][RULE_ID] for c in cards] == [EVALUATION_FAILED]
            request = resp.json()["request"]  # the request is the caller's own data, sent back to the caller
            hook_call = httpx.post(f"{base}/cds-services/neurosarcoidosis-{hook}", json=request, timeout=30)
            assert hook_call.status_code == 200
            assert_no_patient_data(hook_call.text)
    finally:
        out, err = _stop(proc)
    assert "rules_failed" in err
    assert_no_patient_data(out + err)
