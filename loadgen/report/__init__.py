"""Offline reports from a results database: PNG figures and one self-contained HTML page."""
