"""The import graph between zoo's packages stays acyclic (`python -m zoo.graph` prints it)."""

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
