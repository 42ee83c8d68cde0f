"""Solutions to the coded exercises of the notebooks, one module per notebook.

Usage (from the notebooks folder)::

    from solutions.corrupt_and_restore import corrupt_with_noise
    romelib.exercises.check_corrupt_with_noise(corrupt_with_noise)

Try each exercise before reading its solution: the checker's hints are there to help.
"""
