"""The upload service: stream, sniff, validate, hash, store, enqueue."""
