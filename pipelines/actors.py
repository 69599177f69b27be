"""The Ray side of scoring: a pool of scorer actors (used by ``pipelines.ray_executor``).

Each actor owns one backend replica, built inside the actor from the backend spec. A batch is
``(example_id, start, stop)`` plus a reference to the ``(Example, QueryLayout)`` pair in the
object store, which the actor fetches once and caches; masks are rebuilt in the actor. A target
call asks one replica for an example's target (``backend.target``, e.g. the model's own answer)
before any of its batches is sent, so that every replica scores the same target.
An actor that dies is restarted by Ray (``max_restarts``); its in-flight batches and target calls
come back as ``RayActorError`` and are resubmitted. With a journal (``pipelines.journal``, paid
backends), each actor journals every answer as it arrives, and a dead actor's batch takes its
journaled answers along when it is resubmitted, so only the queries it had not answered are sent
again. The driver probes a failed actor with ``info()``, asked again while the actor is
restarting, and sends it no work until the probe answers; a probe that fails means the actor is
gone for good.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from connectors.base import Example, build_backend
from connectors.lru import LRUCache
from pipelines.calls import Batch, BatchResult, TargetCall, TargetResult, make_target
from pipelines.journal import Journal, journal_files, read_journals
from pipelines.layout import QueryLayout
from pipelines.scoring import BatchScorer

logger = logging.getLogger(__name__)

_CACHED_EXAMPLES = 16
_PLACEMENT_WARNING_S = 60.0
_REPROBE_S = 0.5


class ScorerActor:
    """One backend replica scoring batches of query ids (wrapped with ``ray.remote`` by the pool)."""

    def __init__(self, backend_spec: dict[str, Any], max_attempts: int, journal: tuple[str, str] | None = None) -> None:
        """``journal``: (folder, run id) of the journal this replica writes, or None."""
        self._scorer = BatchScorer(build_backend(backend_spec), max_attempts,
                                   None if journal is None else Journal(Path(journal[0]), journal[1]))
        self._work: LRUCache[str, tuple[Example, QueryLayout]] = LRUCache(_CACHED_EXAMPLES)
        self._node_id = ray.get_runtime_context().get_node_id()

    def info(self) -> dict[str, Any]:
        """Where this replica runs and what it is: node id, process id, backend identity."""
        return {"node_id": self._node_id, "pid": os.getpid(), "backend": self._scorer.backend.identity()}

    def target(self, example: Example) -> tuple[str | None, str | None]:
        """``(backend.target(example), None)``, or ``(None, why)`` when the backend cannot make one."""
        return make_target(self._scorer.backend, example)

    def score(self, example_id: str, work: list[ray.ObjectRef], start: int, stop: int,
              recovered: pa.RecordBatch | None = None) -> tuple[pa.RecordBatch, str]:
        """Query-log rows of ids ``[start, stop)``; ``work`` is ``[ref to (Example, QueryLayout)]``;
        ``recovered``: rows of some of these ids journaled by a replica that died (not sent again)."""
        cached = self._work.get(example_id)
        if cached is None:
            cached = ray.get(work[0])
            self._work.put(example_id, cached)
        example, layout = cached
        return self._scorer.score(example, layout, start, stop, recovered), self._node_id


@dataclass
class _Member:
    handle: Any
    info: dict[str, Any] | None = None
    in_flight: int = 0
    probing: bool = False
    batches: int = 0
    queries: dict[str, int] = field(default_factory=dict)  # node id -> queries scored
    deaths: int = 0
    recovered: int = 0  # answers of its dead replicas' batches found in the journal
    resent: int = 0  # queries of its dead replicas' batches sent again


class ScorerPool:
    """``num_actors`` scorer actors, at most ``per_actor`` calls (batches, targets) in flight on each.
    Calls whose actor died come back in ``retry``. ``journal``: (folder, run id) where the actors
    journal their answers (None: no journal)."""

    def __init__(self, backend_spec: dict[str, Any], *, num_actors: int, num_cpus: float, num_gpus: float,
                 max_restarts: int, max_attempts: int, per_actor: int = 2, max_batch_failures: int = 3,
                 journal: tuple[Path, str] | None = None) -> None:
        actor_class = ray.remote(ScorerActor).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts, max_task_retries=0
        )
        self._journal = journal
        where = None if journal is None else (str(journal[0]), journal[1])
        self._members = [_Member(actor_class.remote(backend_spec, max_attempts, where)) for _ in range(num_actors)]
        self._resources = (num_cpus, num_gpus)
        self._per_actor = per_actor
        self._max_batch_failures = max_batch_failures
        self._pending: dict[ray.ObjectRef, tuple[int, Batch | TargetCall | None]] = {}
        self.retry: list[Batch | TargetCall] = []

    def start(self) -> list[dict[str, Any]]:
        """Wait until every actor has built its backend; returns their ``info()``.

        Raises RuntimeError with the actor's error when a backend cannot be built.
        """
        refs = [member.handle.info.remote() for member in self._members]
        while True:
            _, waiting = ray.wait(refs, num_returns=len(refs), timeout=_PLACEMENT_WARNING_S)
            if not waiting:
                break
            logger.warning(
                "%d of %d scorer actors are still starting: waiting for resources (each needs %s CPU, "
                "%s GPU; the cluster has %s) or building their backend",
                len(waiting), len(refs), self._resources[0], self._resources[1],
                {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
            )
        try:
            infos = ray.get(refs)
        except ray.exceptions.RayError as err:
            raise RuntimeError(f"scorer actors failed to start: {_cause(err)}") from None
        for member, info in zip(self._members, infos):
            member.info = info
        return infos

    def has_capacity(self) -> bool:
        return any(self._ready(member) for member in self._members)

    def submit(self, call: Batch | TargetCall) -> None:
        """Send a batch or a target call to the least busy healthy actor (only when ``has_capacity()``)."""
        ready = [i for i, member in enumerate(self._members) if self._ready(member)]
        index = min(ready, key=lambda i: self._members[i].in_flight)
        member = self._members[index]
        if isinstance(call, TargetCall):
            ref = member.handle.target.remote(call.example)
        else:
            ref = member.handle.score.remote(call.example_id, [call.work], call.start, call.stop, call.recovered)
        member.in_flight += 1
        self._pending[ref] = (index, call)

    def refs(self) -> list[ray.ObjectRef]:
        return list(self._pending)

    def collect(self, ref: ray.ObjectRef) -> BatchResult | TargetResult | None:
        """Handle a finished ref: a scored batch, a target, or None (a probe, or a call queued in ``retry``)."""
        index, call = self._pending.pop(ref)
        member = self._members[index]
        if call is None:
            self._probed(member, ref)
            return None
        member.in_flight -= 1
        try:
            answer = ray.get(ref)
        except RayActorError as err:
            call.failures += 1
            if not member.probing and member.handle is not None:  # the first call back from this death
                member.deaths += 1
                member.probing = True
                self._pending[_probe.remote(member.handle)] = (index, None)
            if isinstance(call, Batch) and self._journal is not None:
                self._recover(member, call)
                if call.recovered is not None and call.recovered.num_rows == call.stop - call.start:
                    member.batches += 1
                    return BatchResult(call, call.recovered)
            if call.failures < self._max_batch_failures:
                if isinstance(call, Batch):
                    member.resent += call.stop - call.start - (0 if call.recovered is None else call.recovered.num_rows)
                self.retry.append(call)
                return None
            if isinstance(call, TargetCall):
                return TargetResult(call, None, f"scorer actor died {call.failures} times making the target: "
                                                f"{_cause(err)}")
            return BatchResult(call, None, f"scorer actor died {call.failures} times on this batch: {_cause(err)}")
        if isinstance(call, TargetCall):
            return TargetResult(call, *answer)
        rows, node_id = answer
        member.batches += 1
        member.queries[node_id] = member.queries.get(node_id, 0) + rows.num_rows
        return BatchResult(call, rows)

    def stats(self) -> list[dict[str, Any]]:
        """Per actor: node id and pid (latest seen), batches and queries scored per node, deaths of
        its replica, and of the batches they held, answers recovered from the journal and queries
        sent again."""
        return [
            {
                "actor": i,
                "node_id": (m.info or {}).get("node_id"),
                "pid": (m.info or {}).get("pid"),
                "alive": m.handle is not None,
                "batches": m.batches,
                "queries_by_node": dict(m.queries),
                "deaths": m.deaths,
                "recovered": m.recovered,
                "resent": m.resent,
            }
            for i, m in enumerate(self._members)
        ]

    def losses(self) -> str:
        """For a progress line: ", N actor deaths (M queries sent again)" once an actor died, else ""."""
        deaths = sum(m.deaths for m in self._members)
        if not deaths:
            return ""
        resent = sum(m.resent for m in self._members)
        return f", {deaths} actor death{'s' if deaths > 1 else ''} ({resent} queries sent again)"

    def shutdown(self) -> None:
        for member in self._members:
            if member.handle is not None:
                ray.kill(member.handle, no_restart=True)
                member.handle = None
        self._pending.clear()

    def _recover(self, member: _Member, batch: Batch) -> None:
        """Attach to ``batch`` the rows of it that the dead actor (or an earlier one) journaled."""
        folder, run_id = self._journal
        contents = read_journals(journal_files(folder, run_id), batch.example_id)
        keys = [(batch.example_id, q) for q in range(batch.start, batch.stop) if (batch.example_id, q) in contents.rows]
        in_flight = {key for key, _ in contents.unanswered if batch.start <= key[1] < batch.stop} - set(keys)
        known = 0 if batch.recovered is None else batch.recovered.num_rows  # recovered at an earlier death
        batch.recovered = contents.table(keys).combine_chunks().to_batches()[0] if keys else None
        member.recovered += len(keys) - known
        logger.warning("spex-ray: a scorer actor died under queries %d-%d of %r: %d answers recovered from the "
                       "journal, %d queries unanswered (%d of them were in flight)", batch.start, batch.stop - 1,
                       batch.example_id, len(keys), batch.stop - batch.start - len(keys), len(in_flight))

    def _ready(self, member: _Member) -> bool:
        return member.handle is not None and not member.probing and member.in_flight < self._per_actor

    def _probed(self, member: _Member, ref: ray.ObjectRef) -> None:
        member.probing = False
        try:
            member.info = ray.get(ref)
        except RayActorError:
            member.handle = None
            if all(m.handle is None for m in self._members):
                raise RuntimeError("every scorer actor died and none could be restarted") from None


@ray.remote(num_cpus=0)
def _probe(handle: Any) -> dict[str, Any]:
    """``handle.info()`` once the actor answers: asked again while it is restarting (building its
    backend can take long); an actor gone for good raises ``RayActorError``."""
    while True:
        try:
            return ray.get(handle.info.remote())
        except ActorUnavailableError:
            time.sleep(_REPROBE_S)


def _cause(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
