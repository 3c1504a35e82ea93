import re
import subprocess
import sys
from pathlib import Path

import fslearn

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_exists_and_is_documented():
    api_page = (ROOT / "book" / "api.md").read_text()
    for name in fslearn.__all__:
        assert hasattr(fslearn, name), name
        assert re.search(rf"fslearn\.{name}\b", api_page), f"{name} is missing from book/api.md"
        assert getattr(fslearn, name).__doc__, f"{name} has no docstring"


def test_import_is_light():
    """`import fslearn` must not pull in matplotlib (plots import it on first use)."""
    code = "import sys, fslearn; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
