"""The data the collection works on: known facts, CounterFact records and their one
tune/held-out split, and text corpora."""
