"""mbgen learner package."""
