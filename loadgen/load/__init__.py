"""Generating load with Locust: users that take planned requests, stage by stage, and hand results to a sink.

Importing this package imports Locust, which monkey-patches the standard library for gevent; the CLI imports
it only for the commands that send load.
"""
