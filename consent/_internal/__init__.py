"""Private helpers of the consent package; import only from `consent`."""
