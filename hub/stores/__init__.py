"""One store per MongoDB collection, with its indexes: the only code that reads and writes documents."""
