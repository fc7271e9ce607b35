"""python -m synground_assets.tiny [folder]: build every tiny model (default folder:
$SYNGROUND_TINY_MODELS or ~/.cache/synground/tiny)."""

from __future__ import annotations

import sys

from synground_assets.tiny import build_all


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print("usage: python -m synground_assets.tiny [folder]   (default: $SYNGROUND_TINY_MODELS or "
              "~/.cache/synground/tiny)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    for name, folder in build_all(argv[0] if argv else None).items():
        print(f"{name:20s} {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
