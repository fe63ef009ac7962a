"""The ra query language: time ranges (-t), filter expressions, field lists (-s) and output."""
