"""Training, in the order a run goes: config (options, recipes), data (datasets, the held-out
face list), framing (crops as `detect` frames them), dedup and split (near-copies, groups,
splits, leakage), augment, model, loop (fitting), export, metrics (figures) and report
(rendering); run ties them together, audit inspects data, quantize makes int8 copies.

Needs the `train` extra (torch, matplotlib); nothing in the core imports it.
"""
