"""Tables (markdown/CSV) and figures (matplotlib, Agg backend)."""
