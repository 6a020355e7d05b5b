"""Runners execute one pytest (or torchrun) invocation and report how it ended.

They know nothing of alerts, metrics, HTTP or the store: the scheduler's dispatcher does that.
"""
