"""Services of the connection layer that use Redis: session lookup, admission counted across
instances, history reads and channel recovery, the start-up ACL check."""
