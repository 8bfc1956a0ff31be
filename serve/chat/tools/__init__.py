"""Tool calls: one parser module per call format over the table-driven parser, format detection and the call
grammars."""
