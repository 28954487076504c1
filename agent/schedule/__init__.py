"""Scheduled backups: the agent backs up its changed projects on its own against an RPO.

:mod:`agent.schedule.policy` holds the pure decisions (which projects are due and in which
order, backoff after failures, quiet windows, jitter); :mod:`agent.schedule.runner` is the loop
that looks at the host, asks the policy and submits the backups as ordinary operations.
"""
