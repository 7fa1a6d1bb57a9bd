"""Signed releases: keystore (root + release keys, revocation), release creation with deltas, commands.

Modules: ``keystore`` (key files), ``service`` (create / list / withdraw, artifact store layout),
``field_versions`` (which older releases get a delta), ``commands`` (``cmd.update`` for a release),
``errors`` (named refusals with their HTTP status).
"""
