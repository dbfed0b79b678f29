"""Library of benches/compare.py."""
