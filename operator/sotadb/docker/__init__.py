"""The single-host runtime: the rendered pod templates, run on a Docker engine."""
