"""A dense 2-D tensor backed by a flat list of floats (row-major)."""

from __future__ import annotations

import math
import random
from typing import Callable, Iterable, Sequence, Union

Number = Union[int, float]


class ShapeError(ValueError):
    """Operands have incompatible shapes."""


class Tensor:
    """A rows x cols matrix of floats; vectors are 1 x n."""

    __slots__ = ("cols", "data", "rows")

    def __init__(self, data: Sequence[float], shape: tuple[int, int]) -> None:
        rows, cols = shape
        if rows < 0 or cols < 0 or rows * cols != len(data):
            raise ShapeError(f"{len(data)} values do not fill shape {shape}")
        self.data = [float(x) for x in data]
        self.rows, self.cols = rows, cols

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Number]]) -> Tensor:
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            raise ShapeError(f"ragged rows: widths {sorted(widths)}")
        cols = widths.pop() if widths else 0
        return cls([x for r in rows for x in r], (len(rows), cols))

    @classmethod
    def full(cls, shape: tuple[int, int], value: float) -> Tensor:
        return cls([value] * (shape[0] * shape[1]), shape)

    @classmethod
    def zeros(cls, shape: tuple[int, int]) -> Tensor:
        return cls.full(shape, 0.0)

    @classmethod
    def randn(cls, shape: tuple[int, int], seed: int) -> Tensor:
        rng = random.Random(seed)
        return cls([rng.gauss(0.0, 1.0) for _ in range(shape[0] * shape[1])], shape)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    def __getitem__(self, index: tuple[int, int]) -> float:
        r, c = index
        return self.data[r * self.cols + c]

    def tolist(self) -> list[list[float]]:
        return [self.data[r * self.cols : (r + 1) * self.cols] for r in range(self.rows)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tensor) and self.shape == other.shape and self.data == other.data

    def __repr__(self) -> str:
        return f"Tensor({self.tolist()!r})"

    def _zip(self, other: Tensor | Number, op: Callable[[float, float], float]) -> Tensor:
        if isinstance(other, (int, float)):
            return Tensor([op(a, float(other)) for a in self.data], self.shape)
        if other.shape != self.shape:
            raise ShapeError(f"shapes {self.shape} and {other.shape} differ")
        return Tensor([op(a, b) for a, b in zip(self.data, other.data)], self.shape)

    def __add__(self, other: Tensor | Number) -> Tensor:
        return self._zip(other, lambda a, b: a + b)

    def __sub__(self, other: Tensor | Number) -> Tensor:
        return self._zip(other, lambda a, b: a - b)

    def __mul__(self, other: Tensor | Number) -> Tensor:
        return self._zip(other, lambda a, b: a * b)

    def map(self, fn: Callable[[float], float]) -> Tensor:
        return Tensor([fn(a) for a in self.data], self.shape)

    def matmul(self, other: Tensor) -> Tensor:
        if self.cols != other.rows:
            raise ShapeError(f"cannot multiply {self.shape} by {other.shape}")
        out = [0.0] * (self.rows * other.cols)
        for i in range(self.rows):
            row = self.data[i * self.cols : (i + 1) * self.cols]
            for k, a in enumerate(row):
                if a == 0.0:
                    continue
                base = k * other.cols
                for j in range(other.cols):
                    out[i * other.cols + j] += a * other.data[base + j]
        return Tensor(out, (self.rows, other.cols))

    __matmul__ = matmul

    def transpose(self) -> Tensor:
        flat = [self[r, c] for c in range(self.cols) for r in range(self.rows)]
        return Tensor(flat, (self.cols, self.rows))

    @property
    def T(self) -> Tensor:  # noqa: N802 - numpy spelling
        return self.transpose()

    def reshape(self, shape: tuple[int, int]) -> Tensor:
        return Tensor(self.data, shape)

    def sum(self) -> float:
        return math.fsum(self.data)

    def mean(self) -> float:
        if not self.data:
            raise ShapeError("mean of an empty tensor")
        return self.sum() / len(self.data)

    def norm(self) -> float:
        return math.sqrt(math.fsum(a * a for a in self.data))


def allclose(a: Iterable[float], b: Iterable[float], tol: float = 1e-9) -> bool:
    """Element-wise closeness of two sequences (False when their lengths differ)."""
    xs, ys = list(a), list(b)
    return len(xs) == len(ys) and all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(xs, ys))


def softmax(values: Sequence[float]) -> list[float]:
    """Numerically stable softmax."""
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = math.fsum(exps)
    return [e / total for e in exps]
