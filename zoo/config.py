"""Where the Hydra configs live, and composing them without the CLI."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
