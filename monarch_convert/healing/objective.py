"""What healing minimises, and the fidelity it reports, on one batch of the student's and the
teacher's outputs (real tokens only where there is an attention mask).

- ``logits``: KL(teacher || student) of the softmax over classes (per example, or per real token
  for token-level heads); fidelity: top-1 agreement (%) and KL.
- ``hidden``: relative squared error of the last hidden states, ``sum ||s - t||^2 / sum ||t||^2``
  over real tokens (scale-free, so one learning rate suits models of any width); fidelity: mean
  per-token cosine and, for text, the cosine of the mean-pooled sentence embeddings.
"""

from __future__ import annotations

from typing import Any

from ..errors import MonarchConvertError

TARGETS = ("auto", "logits", "hidden")
# The fidelity each target is summarised by (the progress bar's and the report's headline number).
HEADLINE = {"logits": "top1_agreement", "hidden": "hidden_cosine", "hidden+mask": "embedding_cosine"}


def _pick(output: Any, key: str) -> Any:
    return output.get(key) if isinstance(output, dict) else getattr(output, key, None)


def resolve_target(target: str, output: Any) -> str:
    """``target`` with ``auto`` resolved from one output of the model: logits if it has them."""
    if target not in TARGETS:
        raise MonarchConvertError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "auto":
        target = "logits" if _pick(output, "logits") is not None else "hidden"
    key = "logits" if target == "logits" else "last_hidden_state"
    if _pick(output, key) is None:
        raise MonarchConvertError(f"the model's output has no {key} to match (target={target!r})")
    return target


def headline(target: str, masked: bool) -> str:
    return HEADLINE["hidden+mask" if target == "hidden" and masked else target]


def _rows(tensor: Any, mask: Any) -> Any:
    """(rows, features) of ``tensor``: its real tokens when it is per token and a mask is given."""
    if mask is not None and tensor.dim() == 3 and tuple(mask.shape) == tuple(tensor.shape[:2]):
        return tensor[mask.bool()]
    return tensor.reshape(-1, tensor.shape[-1])


def loss(target: str, student: Any, teacher: Any, mask: Any = None) -> Any:
    """The batch's loss (a scalar tensor with gradient through ``student``)."""
    import torch

    if target == "logits":
        s = _rows(_pick(student, "logits").float(), mask)
        t = _rows(_pick(teacher, "logits").float(), mask)
        return torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True,
                                          reduction="batchmean")
    s = _rows(_pick(student, "last_hidden_state").float(), mask)
    t = _rows(_pick(teacher, "last_hidden_state").float(), mask)
    return (s - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-12)


def fidelity_tensors(target: str, student: Any, teacher: Any, mask: Any = None, *,
                     padded: bool = True) -> dict[str, tuple[Any, int]]:
    """The batch's fidelity as ``{name: (sum, count)}``, each sum a tensor on the outputs' device
    (reading it waits for the device). ``padded=False``: ``mask`` is known to be all ones, so
    every token is a row, taken as such rather than selected by the mask (the same rows; a
    selection waits for the device to count them)."""
    import torch

    from ..evaluation.fidelity import kl_and_agreement_sums
    from ..pooling import mean_pool

    rows_mask = mask if padded else None
    if target == "logits":
        s = _rows(_pick(student, "logits").detach().float(), rows_mask)
        t = _rows(_pick(teacher, "logits").detach().float(), rows_mask)
        kl, agree, n = kl_and_agreement_sums(t, s)
        return {"top1_agreement": (100.0 * agree, n), "kl": (kl, n)}
    s, t = _pick(student, "last_hidden_state").detach().float(), _pick(teacher, "last_hidden_state").float()
    cos = torch.nn.functional.cosine_similarity(_rows(s, rows_mask), _rows(t, rows_mask), dim=-1)
    sums = {"hidden_cosine": (cos.sum(), cos.numel())}
    if mask is not None:
        pooled = torch.nn.functional.cosine_similarity(mean_pool(s, mask), mean_pool(t, mask), dim=-1)
        sums["embedding_cosine"] = (pooled.sum(), pooled.numel())
    return sums


def fidelity_sums(target: str, student: Any, teacher: Any, mask: Any = None) -> dict[str, tuple[float, int]]:
    """The batch's fidelity as ``{name: (sum, count)}`` (``evaluation.fidelity.add_sums``), read."""
    return {name: (float(total), count) for name, (total, count) in fidelity_tensors(target, student, teacher,
                                                                                      mask).items()}
