"""Test doubles: stand-ins whose outputs are known in closed form (tests only, never shipped)."""
