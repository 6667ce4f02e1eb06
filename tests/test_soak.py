"""A reduced soak (``bench/soak.py``): concurrent page sessions over Gradio's raw
queue protocol against ``python app.py``, mixed wire models and the embedded
model, several turns with growing histories.

Same checks as the full run, on fewer pages: no errors, no cross-talk, memory
flat after warm-up, every embedded-model turn answered or fallen back in time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.model


def test_reduced_soak_has_no_errors_no_crosstalk_and_flat_memory():
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--sessions", "32", "--turns", "3",
         "--local-every", "4", "--first-token-timeout", "5"],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["requests"] == 96
    assert figures["errors"] == 0, figures["first_errors"]
    assert figures["crosstalk"] == 0, figures["crosstalk_examples"]
    assert figures["rss_growth_mb"] <= 50, figures
    assert figures["local_requests"] == 24 and figures["local_late"] == 0, figures
    assert figures["local_answered"] + figures["local_fell_back"] == 24
    assert figures["app_alive"]
