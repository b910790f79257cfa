"""exoprov's core: settings, identity, the Exchange and Graph clients, the sweep and the chain.

Nothing here imports azure.functions, so the worker, the CLI and the tests use it directly.
"""
