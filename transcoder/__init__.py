"""The transcode worker: consume jobs, render the ladder, write variants, then the manifest."""
