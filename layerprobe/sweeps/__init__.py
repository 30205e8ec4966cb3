"""Optuna sweeps: the search space (space), the study and its storage (study), the sweep loop the
Hydra plugin runs (search), and a job's side of its trial (trial)."""
