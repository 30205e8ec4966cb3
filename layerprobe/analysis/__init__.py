"""Representation analysis of sampled activations: linear probes, linear CKA, plots, an HTML report.

numpy, scikit-learn and matplotlib only: nothing here imports TensorFlow, mlflow or hydra.
"""

from layerprobe.analysis.analyze import AnalysisResult, analyze
from layerprobe.analysis.cka import CKAMatrix, cka_matrix, linear_cka
from layerprobe.analysis.linear_probe import ProbeScore, linear_probe
from layerprobe.analysis.report import write_report

__all__ = [
    "AnalysisResult",
    "CKAMatrix",
    "ProbeScore",
    "analyze",
    "cka_matrix",
    "linear_cka",
    "linear_probe",
    "write_report",
]
