"""The images' HEALTHCHECK: GET one URL, exit 0 when it answers 200, else 1.

``python /usr/local/bin/heze-healthcheck 'http://127.0.0.1:${ACTION_PORT}/health'``: variables in the
URL are expanded from the container's environment, so the check follows the port the process was
given (the HEALTHCHECK instruction's exec form expands nothing itself). The path is the health URL
the tests and ``python -m stack`` wait for (stack/processes.py); tests/deploy checks they agree."""
from __future__ import annotations

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: heze-healthcheck URL", file=sys.stderr)
        return 2
    url = os.path.expandvars(argv[1])
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
