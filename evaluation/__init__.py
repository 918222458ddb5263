"""Judging models: eval sets, per-answer scoring, best-model selection, the gate and champion promotion.

Pure logic with no Prefect or HTTP: ``tasks/evaluate.py`` asks the models and calls into this package.
"""
