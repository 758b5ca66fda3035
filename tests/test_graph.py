"""The import graph between zoo's packages stays acyclic (`python -m zoo.graph` prints it)."""

import subprocess
import sys
from graphlib import TopologicalSorter

from zoo.graph import graph


def test_package_graph_is_acyclic():
    edges = graph()
    assert {"zoo.train", "zoo.stage", "zoo.load", "zoo.pack", "zoo.slurm"} <= set(edges)
    list(TopologicalSorter(edges).static_order())  # raises CycleError naming the cycle


def test_the_library_core_does_not_depend_on_the_stages():
    """Models, data, weight matching and loaders are usable alone, without the pipeline."""
    edges = graph()
    for core in ("zoo.models", "zoo.align", "zoo.load", "zoo.data"):
        assert not edges[core] & {"zoo.cli", "zoo.pipeline", "zoo.slurm", "zoo.apply", "zoo.landscape"}, core


def test_measuring_and_merging_workers_do_not_import_lightning():
    """Every landscape/apply worker is a fresh process: Lightning (~3 s of CPU) is for training only."""
    modules = "zoo.cli.landscape, zoo.cli.apply, zoo.landscape.stage, zoo.apply.stage"
    code = f"import sys, {modules}\nprint('lightning' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
