"""The CPU fast paths against the reference maths of gpt2.py, in float32, and the numpy
attention row the views read against the reference attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpt2scope.engine import gpt2, kernels, load_model
from gpt2scope.engine.analysis import attention_row
from gpt2scope.engine.gpt2 import Linear
from tests.conftest import write_checkpoint

TOL = 1e-5


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("rows", "n_out"), [(1, 96), (1, 101), (5, 96), (1, 7)])
def test_matmul_and_linear_are_the_reference_products(threads, rows, n_out):
    """One row takes the split product, whose rows left over (101 over 2 or 3 threads, 7 over
    any) take a product of their own; several rows take addmm."""
    x, lin = randn(rows, 64, seed=1), Linear(randn(n_out, 64, seed=2), randn(n_out, seed=3))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast_matmul, fast_linear = kernels.matmul(x, lin.weight), kernels.linear(x, lin)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(fast_matmul, gpt2.matmul(x, lin.weight), atol=TOL, rtol=0)
    torch.testing.assert_close(fast_linear, gpt2.linear(x, lin), atol=TOL, rtol=0)
    torch.testing.assert_close(kernels.linear(x[0], lin), gpt2.linear(x[0], lin), atol=TOL, rtol=0)


@pytest.mark.parametrize(("n_query", "n_key"), [(1, 9), (9, 9), (4, 9)])
def test_attend_is_the_reference_attention(n_query, n_key):
    """Decoding (one query), a prefill (as many queries as keys) and a later chunk of a
    prefill (queries at the last positions) take three different kernels."""
    q, k, v = (
        randn(3, n_query, 16, seed=4) * 3,
        randn(3, n_key, 16, seed=5) * 3,
        randn(3, n_key, 16),
    )
    torch.testing.assert_close(kernels.attend(q, k, v), gpt2.attend(q, k, v), atol=TOL, rtol=0)


def test_the_run_gives_the_reference_forwards_logits(tmp_path):
    write_checkpoint(tmp_path, n_layer=2, n_head=4, n_embd=64, vocab_size=300, scale=4.0)
    model = load_model(tmp_path)
    ids = torch.randint(0, 300, (12,), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        reference = gpt2.forward(model.params, model.config.n_head, ids)
    run = model.start(ids[:4].tolist())  # a prefill, then decode steps
    torch.testing.assert_close(run.logits, reference[3], atol=TOL, rtol=0)
    for t in range(4, len(ids)):
        run.step(int(ids[t]))
        torch.testing.assert_close(run.logits, reference[t], atol=TOL, rtol=0)


def test_the_numpy_attention_row_is_the_reference_attention():
    q, k, v = randn(1, 11, 16, seed=7) * 3, randn(1, 11, 16, seed=8) * 3, randn(1, 11, 16)
    scores = gpt2.attention_scores(q, k)[0]
    pattern = gpt2.attention_pattern(q, k)[0]
    z = gpt2.attend(q, k, v)[0]
    for query in range(11):
        row = attention_row(q[0, query].numpy(), k[0].numpy(), v[0].numpy(), query)
        np.testing.assert_allclose(row.scores, scores[query].numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(row.pattern, pattern[query].numpy(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(row.z, z[query].numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(row.raw_scores, (k[0] @ q[0, query]).numpy(), atol=TOL)
        assert (row.pattern[query + 1 :] == 0).all()
