"""Private helpers of the mapping package; import from `mapping` instead."""
