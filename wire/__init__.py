"""The wire contract: what a receiver gets, and what a producer must send."""
