"""Measuring edits: scoring targets, CounterFact metrics, fluency and consistency, fact checks."""
