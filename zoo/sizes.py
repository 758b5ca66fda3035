"""Data set sizes that zoo-plan and the population grouping count work with, without reading
data or importing torch: the official splits, and what `data.smoke` shrinks each kind of data to."""

SPLIT_SIZES = {  # (train, test) samples
    "mnist1d": (4000, 1000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "svhn": (73257, 26032),
    "tinyimagenet": (100000, 10000),
}
SMOKE_SAMPLES = 64  # images per split: enough for a few steps of any grid cell
SMOKE_WINDOWS = 4  # token windows per epoch and per evaluation
PINN_SMOKE = {"n_collocation": 32, "grid_x": 16, "grid_t": 8}  # convection PDE points
