"""Over-the-air update core: keys, signed manifests, trust decisions, deltas, A/B slot store. No I/O transport."""
