"""The data the collection works on: known facts, CounterFact records and their one
tune/held-out split, text corpora, and the reference data sets on request (``download``)."""
