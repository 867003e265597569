"""An exception module only a computing puppet imports (the tests never do).

A waiter that receives this error has never imported the module, and a
segment's bytes must never make it import anything: it gets a
ComputeError describing the original instead.
"""


class QuoteServiceDown(ConnectionError):
    """Raised by a computation; unknown to every other process."""
