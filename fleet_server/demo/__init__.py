"""The one-command fleet demo (issue 6): see :mod:`fleet_server.demo.orchestrator`.

Modules: ``orchestrator`` (the steps, on the simulated clock), ``stack`` (broker + API + ingest in one
process), ``embedded_broker`` (amqtt; the ingest worker runs on it with ``protocol="mqtt311"``),
``chains`` (reference chains: reuse or build), ``release_models`` (the good and the bad release,
converted for real), ``summary`` (the Rich tables).
"""
