"""Run a command and measure its wall time and peak RSS (the child's own, polled every 20 ms with psutil).

``resource.getrusage`` is not used: on Linux a child's ``ru_maxrss`` can include the pages it shared
with the parent at fork, which inflated earlier figures.
"""

from __future__ import annotations

import subprocess
import threading
import time

import psutil


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str, str, int]:
    """Run ``cmd`` (with ``env``, default the current one); return (wall seconds, peak RSS MB of the process tree, stdout, stderr, returncode)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        try:
            parent = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    rss = parent.memory_info().rss + sum(
                        c.memory_info().rss for c in parent.children(recursive=True)
                    )
                except psutil.Error:
                    break
                peak = max(peak, rss)
                time.sleep(0.02)
        except psutil.Error:
            pass

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    thread.join()
    return wall, peak / 2**20, out, err, proc.returncode
