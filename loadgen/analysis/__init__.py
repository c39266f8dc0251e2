"""Analyses over measured phases: heterogeneous prefill/decode disaggregation."""
