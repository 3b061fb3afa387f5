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
from typing import Any, Callable

from ..errors import MonarchConvertError


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


def _sync(device) -> None:
    import torch

    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def converted_modules(model) -> list[tuple[str, int | None, Any]]:
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

    def __init__(self, model, mask_getter: Callable[[], Any] | None = None):
        self.model = model
        self.mask_getter = mask_getter or (lambda: None)
        self.modules = converted_modules(model)
        self.stats: dict[str, list[float]] = {name: [0.0, 0.0, 0.0, 0.0] for name, _, _ in self.modules}
        self.layers = {name: layer for name, layer, _ in self.modules}
        self.overhead_s = 0.0
        self._handles: list = []
        self._inside = False
        self.paused = False

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
            if self._inside or self.paused or SPEC_ATTR not in module.__dict__:
                return None
            out = _first_tensor(output)
            if out is None:
                return None
            _sync(out.device)
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
            _sync(out.device)
            self.overhead_s += time.perf_counter() - start
            return None

        return hook

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


def output_comparison(ref_out, new_out, attention_mask=None) -> dict[str, float]:
    """KL and top-1 agreement of logits, or cosine of hidden states/embeddings (real tokens only)."""
    import torch

    def pick(o, key):
        return getattr(o, key, None) if not isinstance(o, dict) else o.get(key)

    for key in ("logits", "start_logits"):
        ref, new = pick(ref_out, key), pick(new_out, key)
        if ref is not None:
            ref, new = ref.float(), new.float()
            if attention_mask is not None and ref.dim() == 3 and tuple(attention_mask.shape) == tuple(ref.shape[:2]):
                m = attention_mask.bool().to(ref.device)
                ref, new = ref[m], new[m]
            from .tasks import kl_and_agreement

            kl, agree, n = kl_and_agreement(ref.reshape(-1, ref.shape[-1]), new.reshape(-1, new.shape[-1]))
            return {"kl": kl / n, "top1_agreement": 100.0 * agree / n}
    ref, new = pick(ref_out, "last_hidden_state"), pick(new_out, "last_hidden_state")
    if ref is None:
        ref, new = _first_tensor(ref_out), _first_tensor(new_out)
    if ref is None:
        raise MonarchConvertError("the model's output has no logits or hidden states to compare")
    ref, new = ref.float(), new.float()
    if attention_mask is not None and ref.dim() == 3 and tuple(attention_mask.shape) == tuple(ref.shape[:2]):
        m = attention_mask.bool().to(ref.device)
        ref, new = ref[m], new[m]
    cos = torch.nn.functional.cosine_similarity(ref.reshape(-1, ref.shape[-1]), new.reshape(-1, new.shape[-1]), dim=-1)
    return {"hidden_cosine": float(cos.mean()), "hidden_cosine_min": float(cos.min())}


def measure_fidelity(model, inputs: dict, config=None, **overrides) -> dict[str, Any]:
    """Label-free fidelity of converting ``model`` on ``inputs`` (a dict of model inputs, e.g. a
    tokenizer's output): per converted layer, relative error and cosine of the attention output
    against softmax on the same hidden states; at the output, KL and top-1 agreement of the logits
    (or cosine of the hidden states). ``model`` is left as it was (converted or not)."""
    import torch

    from ..conversion import conversion_report, convert, is_converted, revert

    was = conversion_report(model).settings if is_converted(model) else None
    base = was
    if is_converted(model):
        revert(model)
    device = next(model.parameters()).device
    inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    mask = inputs.get("attention_mask")
    try:
        with torch.no_grad():
            ref = model(**inputs)
            from ..config import MonarchConfig

            cfg = (base or MonarchConfig()).merged(config, **overrides) if (config is not None or overrides) else base
            convert(model, cfg)
            with LayerFidelity(model, lambda: mask) as lf:
                new = model(**inputs)
            settings = conversion_report(model).settings.to_dict()
        return {
            "settings": settings,
            "layers": LayerFidelity.summarize(lf.stats, lf.layers),
            "output": output_comparison(ref, new, mask),
        }
    finally:
        revert(model)
        if was is not None:
            convert(model, was)
