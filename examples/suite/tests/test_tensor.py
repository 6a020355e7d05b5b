"""Tensor arithmetic, shapes and numerics."""

from __future__ import annotations

import math

import pytest

from tinyml.tensor import ShapeError, Tensor, allclose, softmax


@pytest.mark.hourly
def test_add_is_elementwise():
    """Adding two tensors adds matching elements."""
    a = Tensor.from_rows([[1, 2], [3, 4]])
    b = Tensor.from_rows([[10, 20], [30, 40]])
    assert (a + b).tolist() == [[11, 22], [33, 44]]


@pytest.mark.hourly
def test_matmul_known_values():
    """A 2x3 @ 3x2 product matches the hand-computed result."""
    a = Tensor.from_rows([[1, 2, 3], [4, 5, 6]])
    b = Tensor.from_rows([[7, 8], [9, 10], [11, 12]])
    assert (a @ b).tolist() == [[58, 64], [139, 154]]


@pytest.mark.hourly
@pytest.mark.parametrize(
    "op",
    [lambda a, b: a + b, lambda a, b: a @ b],
    ids=["add", "matmul"],
)
def test_shape_mismatch_raises(op):
    """Incompatible shapes raise ShapeError instead of silently broadcasting."""
    with pytest.raises(ShapeError):
        op(Tensor.zeros((2, 3)), Tensor.zeros((2, 2)))


@pytest.mark.daily
def test_transpose_twice_is_identity():
    """Transposing twice gives back the original tensor."""
    t = Tensor.randn((3, 5), seed=1)
    assert t.T.shape == (5, 3)
    assert t.T.T == t


@pytest.mark.daily
def test_reshape_keeps_row_major_order():
    """Reshape reinterprets the same row-major data and rejects a wrong size."""
    t = Tensor.from_rows([[1, 2, 3, 4, 5, 6]]).reshape((3, 2))
    assert t.tolist() == [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(ShapeError):
        t.reshape((4, 2))


@pytest.mark.daily
def test_randn_is_deterministic_per_seed():
    """The same seed gives the same values; a different seed does not."""
    assert Tensor.randn((4, 4), seed=7) == Tensor.randn((4, 4), seed=7)
    assert Tensor.randn((4, 4), seed=7) != Tensor.randn((4, 4), seed=8)


@pytest.mark.daily
def test_softmax_is_stable_and_normalised():
    """Softmax of huge logits neither overflows nor loses normalisation."""
    probs = softmax([1000.0, 1000.0, 999.0])
    assert math.isclose(sum(probs), 1.0)
    assert probs[0] == probs[1] > probs[2]


def test_scalar_ops_broadcast():
    """A scalar operand applies to every element; mean and norm agree with hand values."""
    t = Tensor.from_rows([[3, 4]]) * 2 - 1
    assert t.tolist() == [[5, 7]]
    assert t.mean() == 6
    assert math.isclose(Tensor.from_rows([[3, 4]]).norm(), 5.0)


@pytest.mark.slow
def test_matmul_is_associative_on_random_matrices():
    """(A @ B) @ C equals A @ (B @ C) within float tolerance on 100x100 matrices."""
    a, b, c = (Tensor.randn((100, 100), seed=s) for s in (1, 2, 3))
    assert allclose(((a @ b) @ c).data, (a @ (b @ c)).data, tol=1e-7)
