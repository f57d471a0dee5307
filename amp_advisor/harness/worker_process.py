"""The worker process's side of the protocol in worker.py: `python -m amp_advisor.harness.worker_process`.

Kept apart from worker.py so that running it with -m does not execute a module the package
has already imported (runpy warns about that on every start).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .trial import TrialSpec


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the user's code prints (Python or C) goes to stderr

    def emit(event: dict[str, Any]) -> None:
        protocol.write(json.dumps(event) + "\n")
        protocol.flush()

    import torch

    from .measure import TrialRunner

    default = "cuda:0" if torch.cuda.is_available() else "cpu"
    emit({"event": "ready", "pid": os.getpid(), "torch": torch.__version__, "default_device": default})
    runner = TrialRunner(emit)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("command") == "exit":
            break
        result = runner.run(TrialSpec.from_dict(request["spec"]))
        emit({"event": "result", "result": result.to_dict()})


if __name__ == "__main__":
    main()
