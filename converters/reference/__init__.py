"""TinyFleet's two reference tasks (keyword spotting, digits) and their model fallback chains.

The committed keyword-spotting features live in ``data/``; ``kws_data`` regenerates them with
espeak-ng. ``chain.build_reference_chain`` trains, converts and orders a chain.
"""
