"""tools/soak.py in its short form: 500 starts from 8 threads, then 500
more with the server SIGKILLed at random moments (about 12 s).

Chaos leaves out the "lock" kind for now: a Lock the parent creates while
its tracker (the killed server) is being replaced goes to a stdlib tracker
the client relaunches, and adopting the replacement closes that tracker's
channel, which unlinks the live Lock's name.  That is the tracker-death
semantics, being reworked in client.py/stdlib_tracker.py; drop the skip
once it lands."""
import os
import subprocess
import sys

import pytest

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "tools", "soak.py")


@pytest.mark.skipif(not os.path.exists(TOOL),
                    reason="tools/soak.py is not in this tree")
def test_soak_and_chaos_short_form():
    out = subprocess.run([sys.executable, TOOL, "--starts", "500",
                          "--chaos-skip", "lock"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
