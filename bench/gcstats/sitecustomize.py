"""Imported at startup by processes that ``gateway_bench.py overhead --gc-stats`` starts with this folder on
PYTHONPATH: when ``BENCH_GC_STATS`` names a file prefix, the process writes its cyclic-GC pauses (per generation:
collections, CPU time of this thread in them, the longest one, objects freed), counted from the gateway's
``gc.freeze()`` at startup on (the collections of imports and setup are left out), to ``<prefix>.<pid>.json``, at most
once a second after a collection and at exit (uvicorn ends on the re-raised SIGTERM, where atexit does not run)."""

import atexit
import gc
import json
import os
import time

_prefix = os.environ.get("BENCH_GC_STATS")

if _prefix:
    _stats = {0: [0, 0.0, 0.0, 0], 1: [0, 0.0, 0.0, 0], 2: [0, 0.0, 0.0, 0]}
    _started = [0.0]
    _dumped = [0.0]
    _frozen = [False]

    def _on_gc(phase, info):
        if not _frozen[0]:
            if not gc.get_freeze_count():  # walks the frozen objects: asked only until there are some
                return  # still starting up
            _frozen[0] = True
        if phase == "start":
            _started[0] = time.thread_time()
            return
        cpu_ms = (time.thread_time() - _started[0]) * 1000
        entry = _stats[info["generation"]]
        entry[0] += 1
        entry[1] += cpu_ms
        entry[2] = max(entry[2], cpu_ms)
        entry[3] += info["collected"]
        if time.monotonic() - _dumped[0] > 1:
            _dump()

    def _dump():
        _dumped[0] = time.monotonic()
        with open(f"{_prefix}.{os.getpid()}.json", "w") as out:
            json.dump(
                {
                    str(g): {"collections": n, "cpu_ms": round(total, 2), "max_ms": round(longest, 2), "freed": freed}
                    for g, (n, total, longest, freed) in _stats.items()
                },
                out,
            )

    gc.callbacks.append(_on_gc)
    atexit.register(_dump)
