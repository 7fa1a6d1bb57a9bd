"""Rollouts wired to the database and MQTT: persisted state and decisions, per-device telemetry totals
from ``telemetry_windows``, a command outbox published at QoS 1, and one leading runner per cluster.

* ``service``: create / operator actions / read views (shared by REST routes, CLI and dashboard);
* ``runner.RolloutRunner`` (+ ``build_runner(settings, engine)``): the periodic tick;
* ``fleet_loader``, ``totals_query``: the controller's inputs straight from columns;
* ``command_builder``, ``publisher``: outbox rows and their MQTT publication;
* ``leader.LeaderLock``: PostgreSQL advisory lock (always leader on SQLite).
"""
