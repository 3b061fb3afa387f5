"""Test-only stop points, so that tests can interrupt or kill the command line at an exact place.

Some windows (between two renames) are too short to hit by timing, and a tiny model converts
before a test could send a signal. ``MONARCH_CONVERT_TEST_STOP=NAME`` makes the process print
``stopped at NAME`` to stderr at the point ``NAME`` and wait there for a signal (at most a minute);
``MONARCH_CONVERT_TEST_STOP=NAME:kill`` makes it SIGKILL itself there. Unset (always, outside the
tests), a stop point does nothing. The points: ``loaded`` (model loaded, nothing written yet),
``swap:new`` / ``swap:old`` / ``swap:done`` (see ``output_dir._swap``).
"""

from __future__ import annotations

import os
import signal
import sys
import time

ENV = "MONARCH_CONVERT_TEST_STOP"


def stop_point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    kill = wanted.endswith(":kill")
    if wanted.removesuffix(":kill") != name:
        return
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"stopped at {name}", file=sys.stderr, flush=True)
    time.sleep(60)  # a signal's handler raises out of the sleep
