"""``python -m examples.notify token``: print the service's API token, making it (and
keeping it in the data folder) if none is set, so that a script can show it before the
service starts."""

from __future__ import annotations

import sys

from examples.notify.settings import Settings, api_token


def main(argv: list[str]) -> int:
    if argv != ["token"]:
        print("usage: python -m examples.notify token", file=sys.stderr)
        return 2
    token, _ = api_token(Settings())
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
