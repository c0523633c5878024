"""Every catalog case as a scenario; importing this package fills ``model.REGISTRY``."""

from analyzer.lab.scenarios import beyond, delays, ordinary, resets, timers, variants  # noqa: F401
