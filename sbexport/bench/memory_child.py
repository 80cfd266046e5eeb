"""Entry point of the memory probe's fresh process (memory.probe starts it):

    python -m sbexport.bench.memory_child < spec.json

reads one probe spec (memory.probe_spec) on stdin and prints one JSON line of results
(memory.measure) on stdout. A module of its own, so that `-m` runs a module that the package
has not imported already."""

from __future__ import annotations

import json
import sys

from .memory import measure


def main() -> None:
    print(json.dumps(measure(json.loads(sys.stdin.read()))))


if __name__ == "__main__":
    main()
