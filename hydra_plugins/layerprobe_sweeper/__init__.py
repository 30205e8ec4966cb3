"""layerprobe's Optuna sweeper as a Hydra plugin (`hydra/sweeper=layerprobe_optuna`, used by
conf/sweep/optuna.yaml). Hydra imports every module here on each run: nothing imports Optuna
before a sweep starts. The search itself lives in layerprobe.sweeps."""
