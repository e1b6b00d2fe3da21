"""`python -m simulator`: run the engine simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from .config import config_from_args
from .server import new_event_loop, serve


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(serve(config))
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    except OSError as exc:  # e.g. the port is taken
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
