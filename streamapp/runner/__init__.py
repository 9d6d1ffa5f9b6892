"""The runner, above the task model: claims tasks with a lease, runs them, records outcomes.

``coordinator.py`` (the facade; its public name is ``streamapp.coordinator``) → ``run.py`` (one
run) → ``leases.py`` (every lifecycle write); ``control.py`` (cancel and signal messages),
``sweeper.py`` (expired leases), ``retention.py`` (the purge of expired events), ``worker.py``
(``manage.py runtasks``), ``server_hooks.py`` (daphne start and stop).
"""
