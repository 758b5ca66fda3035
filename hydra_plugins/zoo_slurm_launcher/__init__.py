"""zoo's Hydra launcher plugin (see slurm_launcher.py)."""
