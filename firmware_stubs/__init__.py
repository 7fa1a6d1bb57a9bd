"""Simulated hardware for TinyFleet: profiles, power, sensors, flash. No product logic here."""
