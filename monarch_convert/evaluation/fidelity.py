"""Fidelity without labels: how far the converted model's computation is from softmax's.

Per converted layer: the attention module is run both ways on the same hidden states (those of
the converted model's forward pass): a forward hook calls the module a second time with its spec
removed, which makes the dispatcher run the original softmax implementation with the original
mask; relative error ``||Z_monarch - Z_softmax|| / ||Z_softmax||`` (Frobenius, over all real
tokens) and the mean per-token cosine similarity are accumulated. At the output: KL divergence and
top-1 agreement of the logits (or cosine similarity of the embeddings / hidden states).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from ..errors import MonarchConvertError
from .timing import synchronize


def _first_tensor(x):
    import torch

    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for item in x:
            t = _first_tensor(item)
            if t is not None:
                return t
    if hasattr(x, "values") and callable(x.values):
        for item in x.values():
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def converted_modules(model: Any) -> list[tuple[str, int | None, Any]]:
    """(name, layer, module) of each attention module that ``convert`` converted."""
    from ..conversion import conversion_report

    report = conversion_report(model)
    return [(r.name, r.layer, model.get_submodule(r.name)) for r in report.converted]


class LayerFidelity:
    """Context manager: while active, every converted attention module of ``model`` is also run
    with softmax on the same inputs, and the difference is accumulated per module.

    mask_getter: returns the current batch's (batch, seq) bool mask of real tokens, or None.
    ``overhead_s`` is the time spent in the extra softmax runs (to subtract from timings).
    """

    def __init__(self, model: Any, mask_getter: Callable[[], Any] | None = None):
        self.model = model
        self.mask_getter = mask_getter or (lambda: None)
        self.modules = converted_modules(model)
        self.stats: dict[str, list[float]] = {name: [0.0, 0.0, 0.0, 0.0] for name, _, _ in self.modules}
        self.layers = {name: layer for name, layer, _ in self.modules}
        self.overhead_s = 0.0
        self._handles: list = []
        self._inside = False
        self._paused = False

    def __enter__(self):
        for name, _, module in self.modules:
            self._handles.append(module.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def _hook(self, name: str):
        import torch

        from ..patches.dispatch import SPEC_ATTR

        def hook(module, args, kwargs, output):
            if self._inside or self._paused or SPEC_ATTR not in module.__dict__:
                return None
            out = _first_tensor(output)
            if out is None:
                return None
            synchronize(out.device)
            start = time.perf_counter()
            spec = module.__dict__.pop(SPEC_ATTR, None)
            self._inside = True
            try:
                with torch.no_grad():
                    ref = _first_tensor(module(*args, **kwargs))
            finally:
                self._inside = False
                if spec is not None:
                    setattr(module, SPEC_ATTR, spec)
            a, r = out.detach().float(), ref.detach().float()
            mask = self.mask_getter()
            if mask is not None and a.dim() >= 3 and tuple(mask.shape) == tuple(a.shape[:2]):
                mask = mask.to(a.device).bool()
                a, r = a[mask], r[mask]
            else:
                a, r = a.reshape(-1, a.shape[-1]), r.reshape(-1, r.shape[-1])
            s = self.stats[name]
            s[0] += float((a - r).pow(2).sum())
            s[1] += float(r.pow(2).sum())
            s[2] += float(torch.nn.functional.cosine_similarity(a, r, dim=-1, eps=1e-12).sum())
            s[3] += a.shape[0]
            synchronize(out.device)
            self.overhead_s += time.perf_counter() - start
            return None

        return hook

    @contextmanager
    def pause(self) -> Iterator[None]:
        """No extra softmax runs inside the block (for model calls that are not the evaluated pass)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def rows(self, gather: Callable[[list], list] = list) -> list[dict[str, Any]]:
        """:meth:`summarize` of the stats summed over processes (``gather``: every process's list)."""
        merged: dict[str, list[float]] = {k: [0.0, 0.0, 0.0, 0.0] for k in self.stats}
        for part in gather([self.stats]):
            for k, v in part.items():
                merged[k] = [a + b for a, b in zip(merged[k], v)]
        return self.summarize(merged, self.layers)

    @staticmethod
    def summarize(stats: dict[str, list[float]], layers: dict[str, int | None]) -> list[dict[str, Any]]:
        rows = []
        for name, (d2, r2, cos, n) in stats.items():
            rows.append({
                "name": name,
                "layer": layers.get(name),
                "relative_error": (d2 / r2) ** 0.5 if r2 > 0 else 0.0,
                "cosine": cos / n if n else None,
                "tokens": int(n),
            })
        return rows


def kl_and_agreement_sums(ref_logits: Any, new_logits: Any) -> tuple[Any, Any, int]:
    """Per-row KL(softmax(ref) || softmax(new)) summed, top-1 agreements summed (float32 tensors
    on the logits' device, not read), rows."""
    import torch

    ref = torch.log_softmax(ref_logits.float(), -1)
    new = torch.log_softmax(new_logits.float(), -1)
    kl = (ref.exp() * (ref - new)).sum(-1).clamp_min(0)
    agree = (ref.argmax(-1) == new.argmax(-1)).float()
    return kl.sum(), agree.sum(), int(kl.numel())


def kl_and_agreement(ref_logits: Any, new_logits: Any) -> tuple[float, float, int]:
    """:func:`kl_and_agreement_sums`, read."""
    kl, agree, rows = kl_and_agreement_sums(ref_logits, new_logits)
    return float(kl), float(agree), rows


def add_sums(total: dict[str, list[float]], part: dict[str, tuple[float, int]]) -> None:
    """Add a batch's output-fidelity ``{name: (sum, count)}`` to ``total``; names ending in
    ``_min`` keep the minimum instead."""
    for k, (v, n) in part.items():
        if k.endswith("_min"):
            total[k] = [min(total.get(k, [float("inf")])[0], v), 1]
        else:
            acc = total.setdefault(k, [0.0, 0])
            acc[0] += v
            acc[1] += n


def mean_of_sums(parts: Iterable[dict]) -> dict[str, float | None]:
    """The means (minima for ``_min`` names) of the sums of ``parts`` (one per process)."""
    total: dict[str, list[float]] = {}
    for part in parts:
        add_sums(total, part)
    return {k: (v if k.endswith("_min") else (v / n if n else None)) for k, (v, n) in total.items()}


def _real_tokens(ref, new, attention_mask):
    """``ref`` and ``new`` (batch, seq, ...) at the real tokens of ``attention_mask`` only."""
    if attention_mask is not None and ref.dim() == 3 and tuple(attention_mask.shape) == tuple(ref.shape[:2]):
        m = attention_mask.bool().to(ref.device)
        return ref[m], new[m]
    return ref, new


def output_comparison(ref_out: Any, new_out: Any, attention_mask: Any = None) -> dict[str, float]:
    """KL and top-1 agreement of logits, or cosine of hidden states/embeddings (real tokens only)."""
    import torch

    def pick(o, key):
        return getattr(o, key, None) if not isinstance(o, dict) else o.get(key)

    for key in ("logits", "start_logits"):
        ref, new = pick(ref_out, key), pick(new_out, key)
        if ref is not None:
            ref, new = _real_tokens(ref.float(), new.float(), attention_mask)
            kl, agree, n = kl_and_agreement(ref.reshape(-1, ref.shape[-1]), new.reshape(-1, new.shape[-1]))
            return {"kl": kl / n, "top1_agreement": 100.0 * agree / n}
    ref, new = pick(ref_out, "last_hidden_state"), pick(new_out, "last_hidden_state")
    if ref is None:
        ref, new = _first_tensor(ref_out), _first_tensor(new_out)
    if ref is None:
        raise MonarchConvertError("the model's output has no logits or hidden states to compare")
    ref, new = _real_tokens(ref.float(), new.float(), attention_mask)
    cos = torch.nn.functional.cosine_similarity(ref.reshape(-1, ref.shape[-1]), new.reshape(-1, new.shape[-1]), dim=-1)
    return {"hidden_cosine": float(cos.mean()), "hidden_cosine_min": float(cos.min())}


def measure_fidelity(model: Any, inputs: dict, config: Any = None, **overrides: Any) -> dict[str, Any]:
    """Label-free fidelity of converting ``model`` on ``inputs`` (a dict of model inputs, e.g. a
    tokenizer's output): per converted layer, relative error and cosine of the attention output
    against softmax on the same hidden states; at the output, KL and top-1 agreement of the logits
    (or cosine of the hidden states). ``model`` is left as it was (converted or not)."""
    import torch

    from ..config import MonarchConfig
    from ..conversion import conversion_report, convert, is_converted, revert, softmax

    was = conversion_report(model).settings if is_converted(model) else None
    # Settings given are merged over the model's own; none given: its own (or convert's defaults).
    cfg = (was or MonarchConfig()).merged(config, **overrides) if (config is not None or overrides) else was
    device = next(model.parameters()).device
    inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    mask = inputs.get("attention_mask")
    with softmax(model), torch.no_grad():
        try:
            ref = model(**inputs)
            convert(model, cfg)
            with LayerFidelity(model, lambda: mask) as lf:
                new = model(**inputs)
            settings = conversion_report(model).settings.to_dict()
        finally:
            revert(model)  # softmax() then converts a model given converted back with its settings
    return {
        "settings": settings,
        "layers": lf.rows(),
        "output": output_comparison(ref, new, mask),
    }
