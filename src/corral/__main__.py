"""``python -m corral``: the same entry point as the ``corral`` script."""

from __future__ import annotations

# Guarded, as any script should be: multiprocessing's spawn and forkserver children
# re-import the parent's ``__main__``. corral's own workers do not (see
# ``forkserver_context``), but a user's multiprocessing code in a supervisor may.
if __name__ == "__main__":
    from corral.cli import main

    main()
