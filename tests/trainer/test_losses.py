"""The CPU's one-pass summed cross-entropy: the loss, gradient and accuracy of cross_entropy + argmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backend.trainer import losses


@pytest.mark.parametrize(
    ("dtype", "chunk"), [(torch.float32, 1 << 23), (torch.float32, 64), (torch.bfloat16, 100)]
)
def test_summed_cross_entropy_matches_cross_entropy(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, chunk: int
) -> None:
    monkeypatch.setattr(losses, "CE_CHUNK_ELEMENTS", chunk)  # small chunks: many row chunks, one row each
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(37, 50, generator=gen) * 4
    raw[3] = 1.0  # a row of ties: argmax and max must pick the same (first) index
    targets = torch.randint(0, 50, (37,), generator=gen)
    targets[3] = 0  # ... which the tie row then predicts correctly
    ours_in = raw.to(dtype, copy=True).requires_grad_()
    ref_in = raw.to(dtype, copy=True).requires_grad_()
    loss_sum, correct = losses._SummedCrossEntropy.apply(ours_in, targets, True)
    (loss_sum / 37).backward()
    ref_logits = ref_in.float()
    ref = F.cross_entropy(ref_logits, targets, reduction="sum")
    (ref / 37).backward()
    assert float(loss_sum) == pytest.approx(float(ref), rel=1e-5)
    assert int(correct) == int((ref_logits.argmax(dim=-1) == targets).sum()) > 0
    assert ours_in.grad is not None and ref_in.grad is not None and ours_in.grad.dtype == dtype
    tol = 1e-7 if dtype == torch.float32 else 2e-3  # bf16 gradients, as autocast's head backward gets them
    assert torch.allclose(ours_in.grad.float(), ref_in.grad.float(), atol=tol)


def test_summed_cross_entropy_without_grad_keeps_no_gradient_and_leaves_logits_alone() -> None:
    logits = torch.randn(5, 7)
    before = logits.clone()
    with torch.no_grad():
        loss_sum, correct = losses._SummedCrossEntropy.apply(logits, torch.zeros(5, dtype=torch.long), False)
    assert loss_sum.requires_grad is False and correct.dtype == torch.long
    assert torch.equal(logits, before)
    assert float(loss_sum) == pytest.approx(
        float(F.cross_entropy(logits, torch.zeros(5, dtype=torch.long), reduction="sum"))
    )
