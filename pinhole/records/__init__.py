"""Record store adapters (the ``RecordStore`` port): SQLite embedded, MariaDB/MySQL
shards, and a store that routes virtual shards to shard servers."""
