"""mbgen actors package."""
