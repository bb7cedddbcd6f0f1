"""After a worker failed: the crash event, the budget, respawn or backoff, exhaustion.

The decisions are ``policy``'s (``SlotBudget.on_failure`` and
``after_failure``); this module carries them out and reports each one. When
a slot runs out of budget, ``policy.escalate`` says whether corral as a whole
must stop, and with which exit code; the coordinator does the stopping.

Spawn first, then record: an immediate respawn asks the forkserver for the
replacement *before* the crash is reported, because the reporting (a span, a
log line, metrics, the feed: about a millisecond per event) would otherwise
sit between the death and the replacement. The events keep their order
(``crash``, ``respawn``, ``spawn``) and their times are when each happened:
the crash and the decision when the supervisor saw the death, the spawn when
the replacement existed.
"""

from __future__ import annotations

from corral.config import ServerConfig
from corral.handles import WorkerHandle
from corral.incarnation import Failed
from corral.lifecycle.events import EventKind
from corral.policy import Escalation, GiveUp, Outcome, after_failure, escalate
from corral.supervisor.emitter import Emitter
from corral.supervisor.fleet import Fleet, Slot
from corral.supervisor.rolling import Roller
from corral.supervisor.spares import Spares
from corral.supervisor.spawner import Spawner


class Restarts:
    def __init__(
        self,
        config: ServerConfig,
        fleet: Fleet,
        spawner: Spawner,
        roller: Roller,
        emitter: Emitter,
        *,
        spares: Spares,
    ) -> None:
        self._config = config
        self._fleet = fleet
        self._spawner = spawner
        self._roller = roller
        self._spares = spares
        self._emitter = emitter
        self._emit = emitter.emit

    def on_failed(
        self, slot: Slot, handle: WorkerHandle, failed: Failed, now: float
    ) -> Escalation | None:
        """Report the failure and take the slot's next step; an escalation stops corral."""
        info = failed.info
        decision = slot.budget.on_failure(now, failed.uptime)
        after = after_failure(
            slot.role_of(handle),
            decision,
            running=self._fleet.running,
            has_current=slot.worker is not None,
            incoming_booting=slot.incoming is not None and slot.incoming is not handle,
            succession=slot.succession,
        )
        respawn_now = after.outcome is Outcome.RESPAWN_NOW and not isinstance(decision, GiveUp)
        promotion = self._spares.take_into(slot) if respawn_now else None
        replacement = self._spawner.start(slot) if respawn_now and promotion is None else None
        if not failed.told:
            self._emitter.failure(handle, failed, at=now)
        slot.last_exit = info.describe()
        if self._roller.on_failure(slot, handle, failed, decision=decision, after=after, now=now):
            return None  # a successor failed while its old worker serves on
        if after.outcome is Outcome.NOTHING:
            return None
        if after.outcome is Outcome.EXHAUST:
            assert isinstance(decision, GiveUp)
            return self._exhaust(slot, decision.restarts_in_window)
        if isinstance(decision, GiveUp):  # past the budget, but a successor is booting
            slot.worker = None  # it takes the slot when ready; no restart to report
            return None
        self._emitter.respawn(handle, decision, at=now)
        slot.worker = None
        if after.outcome is Outcome.RESPAWN_LATER:
            slot.respawn_at = now + decision.delay
        elif promotion is not None:
            slot.worker = self._spares.announce(promotion, reason=f"replaces {info.describe()}")
        elif replacement is not None:
            slot.worker = self._spawner.announce(replacement)
        return None  # AWAIT_INCOMING: the replacement already booting takes the slot

    def respawn_due(self, now: float) -> None:
        """Start the slots whose backoff is over: with a warm spare if there is one."""
        for slot in list(self._fleet.slots.values()):
            if slot.respawn_at is not None and slot.respawn_at <= now:
                slot.respawn_at = None
                promoted = self._spares.promote_into(slot, reason="backoff over")
                slot.worker = promoted or self._spawner.spawn(slot)

    def _exhaust(self, slot: Slot, restarts: int) -> Escalation | None:
        slot.worker = None
        slot.exhausted = True
        self._emit(
            EventKind.BUDGET_EXHAUSTED,
            slot=slot.index,
            budget_remaining=0,
            restart_number=restarts,
            message=f"on_exhausted={self._config.on_exhausted.value}",
        )
        fleet = self._fleet
        escalation = escalate(fleet.exhausted_flags(), self._config.on_exhausted, fleet.any_ready)
        return escalation if escalation.stop else None
