"""Baselines for benchmarks/modules.py: the straightforward form of each module.

One file per module, named after the template (templates/<key_>.py <-> benchmarks/baselines/<key_>.py),
exposing ``build(c: int) -> torch.nn.Module`` (same input/output contract as the yolopatch module:
(N, c, H, W) in, (N, c, H, W) out) and ``NAME``, a short description of the baseline. Baselines are
for measuring only; nothing in yolopatch imports them.
"""
