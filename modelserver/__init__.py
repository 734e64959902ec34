"""mbgen modelserver package."""
