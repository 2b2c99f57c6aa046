"""Pipeline wiring (pipeline.py), run configuration (config.py) and runners."""
