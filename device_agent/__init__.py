"""Device agent: runtime adapters, model manager + fallback, telemetry publisher, OTA client. Never imports TensorFlow."""
