"""MONAI Label under load (scripts/load_test_monailabel.py): a real server on 127.0.0.1 with two worker processes,
four clients at once, real radiographs and bad uploads; every request answered, good files predicted, bad ones
refused, the server stopped by its process id."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, require_shared


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_concurrent_clients_are_all_answered_and_bad_uploads_refused(tmp_path):
    if importlib.util.find_spec("monailabel") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("monailabel is not installed (bash scripts/setup_env.sh --tests)")
        pytest.skip("monailabel is not installed")
    require_shared("dicom/chest_cr_monochrome1.dcm")
    require_shared("dicom/tibia_cr_not_chest_j2k.dcm")
    out = tmp_path / "load.json"
    command = [sys.executable, "scripts/load_test_monailabel.py", "--clients", "4", "--requests", "24",
               "--bad_every", "4", "--single_requests", "3", "--pngs", "4", "--workers", "2", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=880)
    assert out.is_file(), done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["requests_sent"] == report["requests_planned"] == 24
    assert report["unanswered"] == 0, report["good"]["failure_examples"]
    assert report["good"]["requests"] == 18 and report["good"]["failures"] == 0, report["good"]["failure_examples"]
    assert report["bad"]["requests"] == 6 and report["bad"]["accepted"] == 0
    assert report["bad"]["answered_with_error"] == 6 and all(s >= 400 for s in report["bad"]["statuses"])
    assert 0 < report["good"]["p50_ms"] <= report["good"]["p95_ms"] <= report["good"]["p99_ms"]
    assert report["memory_mib"]["before"] > 0 and report["workers"] == 2
    assert report["targets"][0]["target"] == "MONAI Label, 4 concurrent clients"
    assert report["targets"][0]["status"] == "PASS" and done.returncode == 0, done.stdout[-2000:]
    assert "Application shutdown complete" in report["server_log_tail"] or "Finished server process" in \
        report["server_log_tail"]
