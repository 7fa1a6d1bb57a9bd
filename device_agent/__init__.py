"""Device agent: runtime adapters, model manager + fallback, telemetry publisher, OTA client.

Never imports TensorFlow: a Pi Zero cannot afford it.
"""
