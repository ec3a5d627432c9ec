"""``python -m facestyle.cli``: the same as ``facestyle`` (and ``python -m facestyle``)."""
from . import main

if __name__ == "__main__":
    raise SystemExit(main())
