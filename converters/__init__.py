"""Keras -> TFLite / TFLite Micro conversion, validation, hardware fit and drift baselines."""
