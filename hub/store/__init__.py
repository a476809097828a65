"""MongoDB persistence, one module per collection; indexes are declared beside the
code that relies on them and created at start-up."""
