"""tools/soak.py in its short form: 500 starts from 8 threads, then 500
more with the server SIGKILLed at random moments (about 12 s)."""
import os
import subprocess
import sys

import pytest

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "tools", "soak.py")


@pytest.mark.skipif(not os.path.exists(TOOL),
                    reason="tools/soak.py is not in this tree")
def test_soak_and_chaos_short_form():
    out = subprocess.run([sys.executable, TOOL, "--starts", "500"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
