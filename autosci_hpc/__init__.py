"""autosci_hpc: AutoScientists-style research campaigns on SLURM clusters."""

__version__ = "0.1.0"
