"""Telemetry schemas, codecs, topic names and drift statistics shared by agent and server. No I/O."""
