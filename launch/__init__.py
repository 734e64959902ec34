"""mbgen launch package."""
