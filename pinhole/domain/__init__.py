"""Pure domain: ids, keys and URLs, the ladder, the job message and the manifest."""
