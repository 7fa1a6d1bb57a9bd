"""The one-command fleet demo (issue 6): see :mod:`fleet_server.demo.orchestrator`.

Modules: ``orchestrator`` (the steps, on the simulated clock), ``stack`` (broker + API + ingest in one
process), ``embedded_broker`` (amqtt), ``ingest_v311`` (the ingest worker on MQTT 3.1.1),
``chains`` (reference chains: reuse or build), ``release_models`` (the good and the bad release,
converted for real), ``summary`` (the Rich tables).
"""
