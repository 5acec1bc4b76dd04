from __future__ import annotations

from stack import main

if __name__ == "__main__":
    raise SystemExit(main())
