"""Capacity: the search for the highest load an endpoint carries within an SLO."""
