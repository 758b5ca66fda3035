"""Weight-space alignment and merging operations: permutation symmetries (`permutation`), weight
matching (`matching`), averaging, barriers and soups (`merging`). Plain functions on state dicts;
the `zoo-apply` stage (`zoo.apply`) runs them over a zoo."""
