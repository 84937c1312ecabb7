"""How runs execute: the batched gradient-descent engine and the run store."""
