"""``python -m k2e.cli``: the ``k2e`` command without the console script."""

from k2e.cli.app import main

if __name__ == "__main__":
    main()
