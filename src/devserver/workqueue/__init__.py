"""Work queues: plain, delaying and rate-limited, with an injectable clock."""
