"""The shared leaf both planes use (docs/invariants.md, README "Layout")."""
