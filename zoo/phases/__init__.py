"""Phases of the loss landscape (Yang et al., NeurIPS 2021): the taxonomy (`rules`) and the zoo's
phase table, phases.json and figures written by `zoo-phases` (`table`)."""

from zoo.phases.rules import PHASES, classify

__all__ = ["PHASES", "classify"]
