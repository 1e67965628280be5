"""Wiring: the batch engine, replay, simulation, the demo and the command line."""
