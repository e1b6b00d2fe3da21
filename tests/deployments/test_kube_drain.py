"""A Kubernetes pod removed by a scale-down drains: its preStop hook (``manifests.DRAIN_SCRIPT``) returns only once
the engine has finished what it runs. Run here against an engine simulator, as the pod would run it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx

from deployments.drivers.kube.manifests import DRAIN_SCRIPT
from simulator import run_simulator


def test_the_prestop_hook_waits_for_the_engines_streams_to_finish():
    with run_simulator(served_model_names=("acme/drain",), ttft_ms=1, itl_ms=20) as url:
        port = url.rsplit(":", 1)[1]
        done = threading.Event()

        def stream_to_end() -> None:
            body = {"model": "acme/drain", "messages": [{"role": "user", "content": "x"}], "max_tokens": 60}
            body.update(ignore_eos=True, stream=True)
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as answer:
                for _ in answer.iter_bytes():
                    pass
            done.set()

        reader = threading.Thread(target=stream_to_end, daemon=True)
        reader.start()
        time.sleep(0.3)  # the stream runs (60 tokens at 20 ms: about 1.2 s)
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", DRAIN_SCRIPT, port, "0", "30"], check=True, timeout=40)
        reader.join(5)
        assert done.is_set()
        assert time.monotonic() - started >= 0.5  # it waited for the stream rather than returning at once
        # With nothing running it returns at once.
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", DRAIN_SCRIPT, port, "0", "30"], check=True, timeout=40)
        assert time.monotonic() - started < 3
