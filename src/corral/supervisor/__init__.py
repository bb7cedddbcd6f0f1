"""The supervision mechanism: spawning, watching, draining and replacing workers.

``Supervisor`` (in ``core``) is the coordinator; each concern it delegates
to has a module of its own:

* ``loop``: the mailbox, commands and operator signals that wake the loop;
* ``spawner``: starting incarnations (threads, forkserver processes) and burying them;
* ``incarnations``: carrying out a worker's state-machine actions (liveness,
  the force-stop ladder);
* ``restarts``: after a failure, the budget, respawn, backoff and exhaustion;
* ``rolling``: reload, recycling and scaling;
* ``systemd``: READY/STOPPING/WATCHDOG notifications;
* ``fleet``: the slots and their derived states;
* ``emitter``: lifecycle events for the collector.

The decisions themselves are pure and live outside this package, in
``corral.incarnation`` and ``corral.policy``.
"""

from corral.states import Phase, SlotState, WorkerStatus
from corral.supervisor.core import Supervisor

__all__ = ["Phase", "SlotState", "Supervisor", "WorkerStatus"]
