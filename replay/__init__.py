"""mbgen replay package."""
