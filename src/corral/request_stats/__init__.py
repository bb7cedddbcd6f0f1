"""Per-slot HTTP request metrics through a shared-memory block per worker incarnation.

Why not ``prometheus_client``'s multiprocess mode: it takes a lock and walks a
dict per update, and it leaves one file per dead pid forever. A request costs
60-100 µs in uvicorn+httptools and we may add at most ~3% to it, so the hot
path here takes no lock, makes no system call and calls no library: it reads
the clock twice and does four single-writer float stores into a
``memoryview`` over an ``mmap``, from inside uvicorn's own request cycle (see
``bench/request_overhead.py``).

The package keeps the parts apart: ``layout`` (the block format, shared),
``recorder`` and ``cycle`` (the worker side) and ``pool`` (the supervisor
side). A worker never imports ``pool``. How the pieces fit:

* The supervisor owns a ``RequestStatsPool``: a private directory (``0700``,
  in ``/dev/shm`` when usable) of fixed-size block files, one per *lane*.
  ``acquire(slot)`` hands a zeroed lane to a new incarnation of a worker slot.
* The worker maps its lane with ``open_recorder(path)``, and its uvicorn
  protocols build ``cycle.metered_cycle``'s request cycle, which counts each
  request with no wrapper around the app. Every store lands in shared memory
  at once, so a worker killed with ``SIGKILL`` loses nothing it had counted.
* The supervisor reads live lanes at scrape time (``snapshot()``) and, when an
  incarnation is gone, ``release(lease)`` folds the lane's final counts into the
  slot's *retired* totals, zeroes it and puts it back on a free list. Counters
  therefore stay monotonic per slot across incarnations, and the directory
  never holds more files than there were ever concurrently live workers.
"""
