"""``python -m chaos``: see chaos/run.py."""

from chaos.run import main

if __name__ == "__main__":
    raise SystemExit(main())
