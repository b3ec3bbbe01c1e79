"""How much work a hook call is, and where its heavy steps run, so one large call never stalls the others.

A usual hook call costs about a millisecond of CPU. A call with thousands of draft orders or a body of
megabytes costs seconds: the rules validate each draft order with the FHIR models (about 0.5 ms each), and a
5 MB body takes a tenth of a second or more to parse and bounds-check. On the event loop that time
stalls every other call of the process, ``/health`` included. So:

* A call with more draft orders than ``CDS_MAX_DRAFT_ORDERS`` (default 1,000) is refused with a 413
  OperationOutcome (``too-costly``) naming the limit, before any rule runs. One ordering session holds
  far fewer unsigned orders; the limit only stops a runaway or hostile client.
* The CPU-heavy steps of a large call run in one worker thread: parsing a body larger than
  :attr:`WorkloadPolicy.large_body_bytes`, and evaluating and encoding the answer of a call with more than
  :attr:`WorkloadPolicy.large_orders` draft orders or :attr:`WorkloadPolicy.large_resources` resources. The
  GIL still runs one thread at a time, but it is handed over every few milliseconds
  (``sys.getswitchinterval()``), so the loop keeps answering while the worker computes (figures in
  docs/operations.md). One thread: two large calls wait for each other instead of taking more of the
  interpreter from the loop. Usual calls never leave the loop (a thread hand-off would cost them more than
  it saves).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from cds_service.errors import PayloadTooLarge, ServiceError

if TYPE_CHECKING:
    from cds_service.clinical.record import PatientRecord
    from cds_service.config import Settings
    from cds_service.hooks import HookCall

T = TypeVar("T")


@dataclass(frozen=True)
class WorkloadPolicy:
    max_draft_orders: int = 1000
    large_body_bytes: int = 512 * 1024  # ~0.1 s of CPU at 5 MB, so ~10 ms here
    large_orders: int = 20  # ~10 ms of rules
    large_resources: int = 2000  # prefetched resources are cheap to the rules (~5 µs each)
    # Large steps waiting for or in the worker: one more is refused (503, retry later) rather than queued
    # behind seconds of others' work; a burst of costly bodies cannot make an ordinary large call wait minutes.
    max_waiting: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkloadPolicy:
        return cls(max_draft_orders=settings.max_draft_orders)


class Workload:
    def __init__(self, policy: WorkloadPolicy | None = None) -> None:
        self.policy = policy or WorkloadPolicy()
        self._executor: ThreadPoolExecutor | None = None
        self.offloaded = 0  # steps run in the worker, for tests and curiosity
        self.waiting = 0  # steps handed to the worker and not finished

    def check(self, call: HookCall) -> None:
        """Refuse a call with more draft orders than the policy allows (413, before any rule runs)."""
        limit = self.policy.max_draft_orders
        if len(call.draft_orders) > limit:
            raise PayloadTooLarge(
                f"context.draftOrders holds {len(call.draft_orders)} orders; this service evaluates at most "
                f"{limit} per call (CDS_MAX_DRAFT_ORDERS).")

    def large_body(self, size: int) -> bool:
        return size > self.policy.large_body_bytes

    def large_record(self, record: PatientRecord) -> bool:
        return len(record.draft_orders) > self.policy.large_orders or \
            record.count() > self.policy.large_resources

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker thread, with this task's context (log fields bound to the request)."""
        if self.waiting >= self.policy.max_waiting:
            raise ServiceError(f"The service is busy with {self.waiting} large calls; retry shortly.", status=503,
                               code="transient", headers={"Retry-After": "2"})
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cds-large-call")
        self.offloaded += 1
        self.waiting += 1
        work = functools.partial(contextvars.copy_context().run, fn, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self.waiting -= 1

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
