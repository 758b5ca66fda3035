"""The `zoo-apply` stage: applications run over the grid cells of a zoo (merging: averaging, lmc, soup),
per cell, with tables and figures over the phase map. The weight-space operations they use (weight
matching, interpolation, averaging) are the library `zoo.align`."""
