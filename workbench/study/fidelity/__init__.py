"""Fidelity: calibration to measured serving runs, the reports against them, and checks against queueing theory."""
