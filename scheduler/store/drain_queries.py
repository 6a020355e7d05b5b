"""Drained GPUs (``gpu_drains``): one row per GPU the health check found unfit, until undrained."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from scheduler.kernel.clock import utcnow
from scheduler.store import dialect
from scheduler.store.base import QueryBase, aware
from scheduler.store.schema import gpu_drains

__all__ = ["DrainQueries"]


class DrainQueries(QueryBase):
    """``gpu_drains``: keyed by GPU UUID (or ``host`` for host findings), shared by processes."""

    def drain_gpu(self, uuid: str, index: int, code: str, reason: str, clears: bool) -> bool:
        """Drain ``uuid`` with its first finding; ``False`` when it was drained already."""
        with self.begin() as conn:
            statement = (
                dialect.insert(conn, gpu_drains)
                .values(
                    gpu_uuid=uuid,
                    gpu_index=index,
                    code=code,
                    reason=reason,
                    clears=clears,
                    drained_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["gpu_uuid"])
            )
            return bool(conn.execute(statement).rowcount)

    def undrain_gpu(self, gpu: str) -> dict[str, Any] | None:
        """Undrain by UUID, ``host``, or index (``"1"``); the row removed, ``None`` if none."""
        column = gpu_drains.c.gpu_uuid
        key: object = gpu
        if gpu.isdigit():
            column, key = gpu_drains.c.gpu_index, int(gpu)
        with self.begin(immediate=True) as conn:
            row = conn.execute(sa.select(gpu_drains).where(column == key)).mappings().first()
            if row is None:
                return None
            conn.execute(gpu_drains.delete().where(gpu_drains.c.gpu_uuid == row["gpu_uuid"]))
            return {k: aware(v) for k, v in row.items()}

    def drained_gpus(self) -> list[dict[str, Any]]:
        """Every drain as a row dict (``gpu_uuid``, ``gpu_index``, ``code``, ``reason``,
        ``clears``, ``drained_at``), by index."""
        with self.begin() as conn:
            rows = conn.execute(sa.select(gpu_drains).order_by(gpu_drains.c.gpu_index)).mappings()
            return [{k: aware(v) for k, v in r.items()} for r in rows]
