"""Tessera render service: /rendered and /thumbnail (PS3.18 §10.4)."""
