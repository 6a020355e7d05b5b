"""GPU leases (``gpu_leases``): one row per leased GPU, taken all-or-nothing by a run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from scheduler.kernel.clock import utcnow
from scheduler.store.base import QueryBase, aware
from scheduler.store.schema import ACTIVE_OUTCOMES, gpu_leases, runs

__all__ = ["LeaseQueries"]


class LeaseQueries(QueryBase):
    """``gpu_leases``: the primary key on the GPU UUID makes a lease exclusive across processes."""

    def acquire_leases(self, run_id: int, tier: str, gpus: Sequence[tuple[int, str]]) -> bool:
        """Atomically lease all ``(index, uuid)`` pairs to ``run_id``; ``False`` if any is taken."""
        now = utcnow()
        try:
            with self.begin() as conn:
                conn.execute(
                    gpu_leases.insert(),
                    [
                        {
                            "gpu_uuid": uuid,
                            "gpu_index": index,
                            "run_id": run_id,
                            "tier": tier,
                            "acquired_at": now,
                        }
                        for index, uuid in gpus
                    ],
                )
        except IntegrityError:
            return False
        return True

    def release_leases(self, run_id: int) -> None:
        with self.begin() as conn:
            conn.execute(gpu_leases.delete().where(gpu_leases.c.run_id == run_id))

    def active_leases(self) -> list[dict[str, Any]]:
        """Every lease as a row dict (``gpu_uuid``, ``gpu_index``, ``run_id``, ``tier``, ...),
        by GPU index."""
        with self.begin() as conn:
            return [
                {k: aware(v) for k, v in r.items()}
                for r in conn.execute(
                    sa.select(gpu_leases).order_by(gpu_leases.c.gpu_index)
                ).mappings()
            ]

    def release_dead_leases(self) -> int:
        """Drop leases whose run is no longer active (crash recovery)."""
        with self.begin() as conn:
            return int(conn.execute(DEAD_LEASES).rowcount or 0)


DEAD_LEASES = gpu_leases.delete().where(
    gpu_leases.c.run_id.not_in(sa.select(runs.c.id).where(runs.c.outcome.in_(ACTIVE_OUTCOMES)))
)
"""Leases whose run is no longer active (also compiled for :mod:`.writer`)."""
