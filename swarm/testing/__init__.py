"""Test doubles for the swarm, shipped so that tests, benchmarks and examples share them."""
