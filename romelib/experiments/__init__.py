"""The programs that produce the saved results, each runnable as
``python -m romelib.experiments.<name>``; they import the library, never the reverse."""
