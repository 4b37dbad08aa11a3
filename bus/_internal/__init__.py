"""Private helpers of the bus package; no stable interface."""
