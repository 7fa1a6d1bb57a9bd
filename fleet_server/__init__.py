"""Fleet server: operator API, database, telemetry ingest, rollout controller, CLI."""
