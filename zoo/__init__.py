"""zoo: model zoos across loss-landscape phases, packed as datasets for weight-space learning."""

__version__ = "0.1.0"
