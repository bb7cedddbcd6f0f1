"""``python -m corral``: the same entry point as the ``corral`` script."""

from __future__ import annotations

# Guarded: multiprocessing's spawn and forkserver children re-import the
# parent's ``__main__`` module as ``__mp_main__``, and must not start a CLI.
if __name__ == "__main__":
    from corral.cli import main

    main()
