"""The CLI answers fast: its top level imports no heavy library."""

from __future__ import annotations

import subprocess
import sys


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from pipeline import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'monai', 'numpy', 'nibabel', 'pydicom', 'scipy') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out
    assert "demo" in out


def test_unknown_stage_fails():
    proc = subprocess.run([sys.executable, "-m", "pipeline", "nosuchstage"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr

