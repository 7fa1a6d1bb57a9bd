"""Over-the-air update core: keys, signed manifests, trust decisions, deltas, A/B slot store.

No transport here: the server and the agent move the bytes (HTTP, MQTT) and call into this package.
"""
