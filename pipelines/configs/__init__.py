"""Typed configs of the pipeline templates, one module per template."""
