"""Packages as pyproject.toml describes, plus the checkout's top-level `conf/` and
`manifests/schema.json` shipped inside the package as `zoo/conf` and `zoo/manifests`, where
zoo.config finds them with importlib.resources (pyproject.toml cannot list found packages and
renamed folders together)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["zoo*", "hydra_plugins*"]) + ["zoo.conf", "zoo.manifests"],
    package_dir={"zoo.conf": "conf", "zoo.manifests": "manifests"},
    package_data={"zoo": ["plan_costs.json"], "zoo.conf": ["**/*.yaml"], "zoo.manifests": ["schema.json"]},
)
