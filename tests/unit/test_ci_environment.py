"""What CI must have so that the tests needing it run there instead of skipping: Chromium (the report's browser
tests), `../shared/corpus` beside the clone (the real-data tests) and dcm2niix (the geometry references).

In a user's clone (no `CI` variable) a missing piece skips here, as the tests that need it skip; where `CI` is set
(`.ci/run` sets it, as CI services do) a missing piece fails here: the skips elsewhere cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import CORPUS
from tests.unit.cdp import find_chromium

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require(present: bool, missing: str) -> None:
    if present:
        return
    if IN_CI:
        pytest.fail(f"CI is set but {missing}", pytrace=False)
    pytest.skip(f"{missing} (fine outside CI)")


def test_chromium_is_installed():
    _require(find_chromium() is not None,
             "no Chromium is installed (the report's browser tests skip; .ci/run installs Debian's chromium)")


def test_shared_corpus_is_beside_the_clone():
    _require((CORPUS / "dcm_qa_decubitus").is_dir(),
             f"{CORPUS}/dcm_qa_decubitus is missing (the real-data tests skip; CI has ../shared beside the clone)")


def test_dcm2niix_is_on_the_path():
    _require(shutil.which("dcm2niix") is not None,
             "dcm2niix is not on PATH (the geometry tests against it skip; it is a dependency: pip install -e .)")
