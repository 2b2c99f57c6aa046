"""Wafer-test data: the synthetic generator, its writers, and the readers the pipeline ingests with."""
